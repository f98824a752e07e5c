//! Hand-optimised kernels at 256 bits: `__m256` with AVX2 and FMA, written
//! as one would by hand for a library (XNNPACK's 6x16 f32 GEMM microkernel
//! is the model for the conv / pointwise tile). Every `#[target_feature]`
//! function here is reached only through [`Conv`] / [`Depthwise`], which
//! are built only when [`available`] says the CPU has the features.
//!
//! The structure is the sse128 family's (`sse.rs`), with borders handled
//! better: along each output row, the columns whose taps are all inside the
//! input horizontally run in blocks of 6 pixels without bounds checks, over
//! the row's tap list (on the top and bottom rows only the kernel rows
//! inside the input, so padding zeros are skipped and those rows stay
//! blocked); the few left and right border pixels run one at a time over
//! their in-bounds taps.
//! Channel tails never touch memory outside the buffers: partial vectors are
//! read with `_mm256_maskload_ps` and written with `_mm256_maskstore_ps`
//! (masked-off lanes are neither read nor written), and packed weights and
//! biases are zero-padded to whole vectors.

use crate::geometry::{border_taps, interior};
use convjit_ir::{Activation, Stage, StageKind, StageWeights};
use std::arch::x86_64::*;

/// Lanes of one `__m256`.
const L: usize = 8;
/// Floats per 64-byte cache line.
const LINE: usize = 16;
/// Output channels per register block of the conv / pointwise kernel: two
/// vectors.
const NR: usize = 2 * L;
/// Pixels per interior block. Conv / pointwise: 6 pixels x 2 vectors = 12
/// accumulators, plus 2 weight vectors and one broadcast input = 15 of the
/// 16 ymm registers. Depthwise: 6 x 2 accumulators and 2 weight vectors.
const PX: usize = 6;

pub fn available() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

/// A mask of the first `n` lanes (`n <= 8`) for `maskload` / `maskstore`
/// (a lane is active when its sign bit is set).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_mask(n: usize) -> __m256i {
    let lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    _mm256_cmpgt_epi32(_mm256_set1_epi32(n as i32), lane)
}

/// `act(acc + bias)`.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn activate(acc: __m256, bias: __m256, act: Activation) -> __m256 {
    let a = _mm256_add_ps(acc, bias);
    match act {
        Activation::None => a,
        // `a` second: NaN propagates (see sse.rs).
        Activation::Relu => _mm256_max_ps(_mm256_setzero_ps(), a),
        Activation::Relu6 => {
            _mm256_min_ps(_mm256_set1_ps(6.0), _mm256_max_ps(_mm256_setzero_ps(), a))
        }
    }
}

/// Stores lanes `0..n` (1..=8) of `a` at `out`, adding `res` first if given.
///
/// # Safety
/// `out[0..n]` (and `res[0..n]`) must be valid; nothing past lane `n` is
/// touched.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(a: __m256, n: usize, out: *mut f32, res: Option<*const f32>) {
    // SAFETY: this function's contract (# Safety), which its caller keeps.
    unsafe {
        if n >= L {
            let a = match res {
                Some(r) => _mm256_add_ps(a, _mm256_loadu_ps(r)),
                None => a,
            };
            _mm256_storeu_ps(out, a);
        } else {
            let mask = lane_mask(n);
            let a = match res {
                Some(r) => _mm256_add_ps(a, _mm256_maskload_ps(r, mask)),
                None => a,
            };
            _mm256_maskstore_ps(out, mask, a);
        }
    }
}

/// Evaluates `$body` with a constant `$p` equal to `$n` (1..=6): a run of
/// pixels shorter than a whole block gets its own register block.
macro_rules! dispatch {
    ($n:expr, $p:ident => $body:expr) => {
        match $n {
            1 => {
                const $p: usize = 1;
                $body
            }
            2 => {
                const $p: usize = 2;
                $body
            }
            3 => {
                const $p: usize = 3;
                $body
            }
            4 => {
                const $p: usize = 4;
                $body
            }
            5 => {
                const $p: usize = 5;
                $body
            }
            6 => {
                const $p: usize = 6;
                $body
            }
            n => unreachable!("{n} pixels in a block"),
        }
    };
}

/// Where one run of pixels reads and writes: input pixel pointers (each
/// tap adds its offset to them), output element offsets.
#[derive(Clone, Copy)]
struct Run<const P: usize> {
    px: [*const f32; P],
    at: [usize; P],
}

/// Pixels along one output row that share one tap list: pixel `j` reads
/// from `first + j * step` (plus each tap's offset) and writes the output
/// elements from `at + j * co`.
#[derive(Clone, Copy)]
struct Span {
    first: *const f32,
    step: usize,
    at: usize,
}

impl Span {
    /// The span from its pixel `j` on.
    ///
    /// # Safety
    /// Pixel `j` must be one of the span's.
    #[inline]
    unsafe fn skip(self, j: usize, co: usize) -> Span {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            Span {
                first: self.first.add(j * self.step),
                step: self.step,
                at: self.at + j * co,
            }
        }
    }
}

/// The first `P` pixels of `span` (`co` output channels per pixel).
///
/// # Safety
/// The `P` pixels must lie inside the input (and, with taps, every tap of
/// them).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn run_of<const P: usize>(span: Span, co: usize) -> Run<P> {
    // SAFETY: this function's contract (# Safety), which its caller keeps.
    unsafe {
        let mut run = Run {
            px: [span.first; P],
            at: [0; P],
        };
        for j in 0..P {
            run.px[j] = span.first.add(j * span.step);
            run.at[j] = span.at + j * co;
        }
        run
    }
}

/// Row by row over `batch` images (`c` input channels and `co` output
/// channels per pixel). The columns whose taps are all inside the input
/// horizontally are one span with the row's tap list: all taps on interior
/// rows, the kernel rows inside the input on the top and bottom rows (so the
/// padding is skipped without leaving the blocked path). `block(n, span,
/// taps)` runs the `n` pixels of such a span (each kernel chooses its loop
/// order over pixels and channels); `border(img, oy, x, obase)` one pixel of
/// the left or right border.
///
/// # Safety
/// The CPU must have AVX2 and FMA; `image(n)` points at image `n` of `batch` images
/// of the stage's input shape (`c` channels), and `block` and `border` keep
/// the accesses of the pixels they are given inside the buffers.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn walk_rows(
    s: &Stage,
    c: usize,
    co: usize,
    batch: usize,
    mut image: impl FnMut(usize) -> *const f32,
    mut block: impl FnMut(usize, Span, &[(usize, isize)]),
    mut border: impl FnMut(*const f32, usize, usize, usize),
) {
    // SAFETY: this function's contract (# Safety), which its caller keeps.
    unsafe {
        let [kh, kw] = s.kernel;
        let [sh, sw] = s.stride;
        let [dh, dw] = s.dilation;
        let (si, so) = (s.input, s.output);
        let (x_lo, x_hi) = interior(si.w, so.w, kw, sw, dw, s.padding.left);
        let mut taps = Vec::with_capacity(kh * kw);
        for n in 0..batch {
            let img = image(n);
            for oy in 0..so.h {
                // The kernel rows inside the input (contiguous), offsets from
                // the first one's tap (ky0, 0).
                let iy0 = (oy * sh) as isize - s.padding.top as isize;
                let inside = |ky: usize| (0..si.h as isize).contains(&(iy0 + (ky * dh) as isize));
                taps.clear();
                let first_row = (0..kh).find(|&ky| inside(ky)).map(|ky0| {
                    for ky in (ky0..kh).take_while(|&ky| inside(ky)) {
                        for kx in 0..kw {
                            let off = ((ky - ky0) * dh * si.w + kx * dw) * c;
                            taps.push((ky * kw + kx, off as isize));
                        }
                    }
                    (iy0 + (ky0 * dh) as isize) as usize
                });
                let obase = (n * so.h + oy) * so.w;
                if x_lo < x_hi {
                    let span = match first_row {
                        Some(iy) => Span {
                            first: img.add((iy * si.w + x_lo * sw - s.padding.left) * c),
                            step: sw * c,
                            at: (obase + x_lo) * co,
                        },
                        // A row wholly in the padding: no taps read the input.
                        None => Span {
                            first: img,
                            step: 0,
                            at: (obase + x_lo) * co,
                        },
                    };
                    block(x_hi - x_lo, span, &taps);
                }
                for x in (0..x_lo).chain(x_hi.max(x_lo)..so.w) {
                    border(img, oy, x, obase);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Standard conv and pointwise: one register-blocked microkernel.

/// A conv or pointwise stage: weights repacked to `[Co/16][Kh*Kw][Ci][16]`
/// (the last block zero-padded), bias to `[Co/16][16]`.
pub struct Conv {
    stage: Stage,
    ci: usize,
    co: usize,
    blocks: usize,
    taps: usize,
    packed: Vec<f32>,
    bias: Vec<f32>,
    /// The in-bounds taps of one border pixel (capacity reserved up front).
    border: Vec<(usize, isize)>,
    /// 1x1, stride 1, unpadded: all pixels of all images are one row.
    flat: bool,
}

impl Conv {
    pub fn new(s: &Stage, w: &StageWeights) -> Conv {
        assert!(available());
        let (ci, co) = (s.input.c, s.output.c);
        let cout = match s.kind {
            StageKind::Conv { cout, groups: 1 } | StageKind::Pointwise { cout, groups: 1 } => cout,
            StageKind::Conv { .. } | StageKind::Pointwise { .. } => panic!("grouped stage"),
            StageKind::Depthwise { .. } => panic!("not a conv stage"),
        };
        assert_eq!(cout, co);
        let taps = s.kernel[0] * s.kernel[1];
        let blocks = co.div_ceil(NR);
        // HWIO [tap][ci][co] -> [block][tap][ci][16].
        let mut packed = vec![0f32; blocks * taps * ci * NR];
        for t in 0..taps {
            for i in 0..ci {
                for o in 0..co {
                    let (b, j) = (o / NR, o % NR);
                    packed[((b * taps + t) * ci + i) * NR + j] = w.weight[(t * ci + i) * co + o];
                }
            }
        }
        let mut bias = vec![0f32; blocks * NR];
        if let Some(b) = &w.bias {
            bias[..co].copy_from_slice(b);
        }
        let p = s.padding;
        let flat = taps == 1
            && s.stride == [1, 1]
            && p.top + p.bottom + p.left + p.right == 0
            && s.input.h == s.output.h
            && s.input.w == s.output.w;
        Conv {
            stage: s.clone(),
            ci,
            co,
            blocks,
            taps,
            packed,
            bias,
            border: Vec::with_capacity(taps),
            flat,
        }
    }

    pub fn run(&mut self, input: &[f32], output: &mut [f32], batch: usize, res: Option<&[f32]>) {
        let s = &self.stage;
        assert_eq!(input.len(), batch * s.input.len());
        assert_eq!(output.len(), batch * s.output.len());
        if let Some(r) = res {
            assert_eq!(r.len(), output.len());
        }
        // SAFETY: `Conv` is only built when `available()`; every pointer the
        // kernel forms lies inside these slices (lengths asserted above), and
        // partial vectors are masked.
        unsafe { self.run_avx2(input, output, batch, res) }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; `input`, `output` (and `res`) hold `batch` images of
    /// the stage's input and output shapes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        res: Option<&[f32]>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let (ci, co) = (self.ci, self.co);
            let inp = input.as_ptr();
            let out = output.as_mut_ptr();
            let res = res.map(<[f32]>::as_ptr);
            if self.flat {
                let pixels = batch * self.stage.input.h * self.stage.input.w;
                let span = Span {
                    first: inp,
                    step: ci,
                    at: 0,
                };
                self.span(pixels, span, &[(0, 0)], out, res);
                return;
            }
            let mut border = std::mem::take(&mut self.border);
            let s = self.stage.clone();
            let this = &*self;
            walk_rows(
                &s,
                ci,
                co,
                batch,
                |n| inp.add(n * s.input.len()),
                |n, span, taps| this.span(n, span, taps, out, res),
                |img, oy, x, obase| {
                    border_taps(&s, ci, oy, x, &mut border);
                    let span = Span {
                        first: img,
                        step: 0,
                        at: (obase + x) * co,
                    };
                    this.span(1, span, &border, out, res);
                },
            );
            self.border = border;
        }
    }

    /// All output channels of the `n` pixels of `span`, in blocks of 6
    /// pixels (weights stream from cache once per block).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the `n` pixels of `span` and every tap of them lie
    /// inside the input, and `out` (and `res`) hold every output channel of
    /// those pixels.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn span(
        &self,
        n: usize,
        span: Span,
        taps: &[(usize, isize)],
        out: *mut f32,
        res: Option<*const f32>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let mut j = 0;
            while j < n {
                let k = (n - j).min(PX);
                let sp = span.skip(j, self.co);
                dispatch!(k, P => self.pixels(run_of::<P>(sp, self.co), taps, out, res));
                j += k;
            }
        }
    }

    /// All output channels of the pixels of `run`: 16 channels at a time,
    /// the last block 8 wide when at most 8 channels remain.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the pixels of `run` and every tap of them lie inside
    /// the input, and `out` (and `res`) hold every output channel of them.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pixels<const P: usize>(
        &self,
        run: Run<P>,
        taps: &[(usize, isize)],
        out: *mut f32,
        res: Option<*const f32>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let act = self.stage.activation;
            for b in 0..self.blocks {
                let lanes = (self.co - b * NR).min(NR);
                let w = self.packed.as_ptr().add(b * self.taps * self.ci * NR);
                let bias = self.bias.as_ptr().add(b * NR);
                let o = run.at.map(|a| out.add(a + b * NR));
                let r = res.map(|r| run.at.map(|a| r.add(a + b * NR)));
                if lanes > L {
                    tile::<P, 2>(run.px, taps, self.ci, w, bias, o, r, act, lanes);
                } else {
                    tile::<P, 1>(run.px, taps, self.ci, w, bias, o, r, act, lanes);
                }
            }
        }
    }
}

/// `P` pixels x `G` vectors of output channels (`G * P` accumulators): per
/// input channel and tap, `G` weight vectors loaded once and one broadcast
/// input per pixel, shared across that pixel's `G` accumulators. `lanes`
/// (<= `8 * G`) output channels are stored, the last vector masked.
///
/// # Safety
/// The CPU must have AVX2 and FMA; every pixel of `px` plus each tap's offset lies
/// inside the input, `w` and `bias` are a block of the packed weights and
/// bias, and `out` (and `res`) hold `lanes` channels at each pixel.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn tile<const P: usize, const G: usize>(
    px: [*const f32; P],
    taps: &[(usize, isize)],
    ci: usize,
    w: *const f32,
    bias: *const f32,
    out: [*mut f32; P],
    res: Option<[*const f32; P]>,
    act: Activation,
    lanes: usize,
) {
    // SAFETY: this function's contract (# Safety), which its caller keeps.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); G]; P];
        for &(t, off) in taps {
            let wt = w.add(t * ci * NR);
            let mut x = px;
            for p in x.iter_mut() {
                *p = p.offset(off);
            }
            for i in 0..ci {
                let wp = wt.add(i * NR);
                let mut wv = [_mm256_setzero_ps(); G];
                for (g, v) in wv.iter_mut().enumerate() {
                    *v = _mm256_loadu_ps(wp.add(L * g));
                }
                for p in 0..P {
                    let v = _mm256_broadcast_ss(&*x[p].add(i));
                    for g in 0..G {
                        acc[p][g] = _mm256_fmadd_ps(v, wv[g], acc[p][g]);
                    }
                }
            }
        }
        for p in 0..P {
            for (g, &a) in acc[p].iter().enumerate() {
                let lane = g * L;
                if lane >= lanes {
                    break;
                }
                let a = activate(a, _mm256_loadu_ps(bias.add(lane)), act);
                store(
                    a,
                    lanes - lane,
                    out[p].add(lane),
                    res.map(|r| r[p].add(lane)),
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Depthwise.

/// A depthwise stage. The contract's `[Kh][Kw][C][M]` weights are already
/// `[tap][C*M]`, vector-ready over output channels. With a multiplier, each
/// image is first expanded to `C*M` channels (`x[c]` repeated `M` times) in a
/// scratch buffer, and the multiplier-1 kernel runs on that.
pub struct Depthwise {
    stage: Stage,
    /// Output channels, `C*M`.
    c: usize,
    m: usize,
    weight: Vec<f32>,
    bias: Vec<f32>,
    /// Scratch for the expanded image (multiplier > 1), `expanded_at`
    /// floats in so that it starts on a 64-byte line: the vectors read from
    /// it then never straddle two cache lines.
    expanded: Vec<f32>,
    expanded_at: usize,
    border: Vec<(usize, isize)>,
}

impl Depthwise {
    pub fn new(s: &Stage, w: &StageWeights) -> Depthwise {
        assert!(available());
        let StageKind::Depthwise { multiplier: m } = s.kind else {
            panic!("not a depthwise stage")
        };
        let c = s.output.c;
        assert_eq!(c, s.input.c * m);
        let taps = s.kernel[0] * s.kernel[1];
        let len = if m > 1 { s.input.h * s.input.w * c } else { 0 };
        let expanded = vec![0f32; len + LINE - 1];
        let expanded_at = expanded.as_ptr().align_offset(LINE * 4).min(LINE - 1);
        Depthwise {
            stage: s.clone(),
            c,
            m,
            weight: w.weight.clone(),
            bias: w.bias.clone().unwrap_or_else(|| vec![0.0; c]),
            expanded,
            expanded_at,
            border: Vec::with_capacity(taps),
        }
    }

    pub fn run(&mut self, input: &[f32], output: &mut [f32], batch: usize, res: Option<&[f32]>) {
        let s = &self.stage;
        assert_eq!(input.len(), batch * s.input.len());
        assert_eq!(output.len(), batch * s.output.len());
        if let Some(r) = res {
            assert_eq!(r.len(), output.len());
        }
        // SAFETY: as for `Conv::run`.
        unsafe { self.run_avx2(input, output, batch, res) }
    }

    /// # Safety
    /// The CPU must have AVX2 and FMA; `input`, `output` (and `res`) hold `batch` images of
    /// the stage's input and output shapes.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        res: Option<&[f32]>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let s = self.stage.clone();
            let c = self.c;
            let out = output.as_mut_ptr();
            let res = res.map(<[f32]>::as_ptr);
            let mut border = std::mem::take(&mut self.border);
            let mut expanded = std::mem::take(&mut self.expanded);
            let this = &*self;
            walk_rows(
                &s,
                c,
                c,
                batch,
                // Image `n`, expanded to `C*M` channels first with a multiplier.
                |n| {
                    let image = &input[n * s.input.len()..][..s.input.len()];
                    if this.m == 1 {
                        image.as_ptr()
                    } else {
                        let e = &mut expanded[this.expanded_at..][..image.len() * this.m];
                        expand(image, this.m, e);
                        e.as_ptr()
                    }
                },
                |n, span, taps| this.span(n, span, taps, out, res),
                |img, oy, x, obase| {
                    border_taps(&s, c, oy, x, &mut border);
                    let span = Span {
                        first: img,
                        step: 0,
                        at: (obase + x) * c,
                    };
                    this.span(1, span, &border, out, res);
                },
            );
            self.border = border;
            self.expanded = expanded;
        }
    }

    /// All channels of the `n` pixels of `span`: 16 channels at a time (2
    /// vectors x 6 pixels), then 8, then one masked vector for the tail.
    /// Channels are the outer loop: a 16-channel slice of the rows the span
    /// reads stays in L1 while its pixels run (all channels of a pixel
    /// block, 3 rows x 8 pixels x 512 channels, would fill it).
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the `n` pixels of `span` and every tap of them lie
    /// inside the input, and `out` (and `res`) hold every channel of those
    /// pixels.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn span(
        &self,
        n: usize,
        span: Span,
        taps: &[(usize, isize)],
        out: *mut f32,
        res: Option<*const f32>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let c = self.c;
            let mut ch = 0;
            while ch + 2 * L <= c {
                self.channels::<2>(n, span, taps, ch, L, out, res);
                ch += 2 * L;
            }
            if ch + L <= c {
                self.channels::<1>(n, span, taps, ch, L, out, res);
                ch += L;
            }
            if ch < c {
                self.channels::<1>(n, span, taps, ch, c - ch, out, res);
            }
        }
    }

    /// `G` vectors of channels from `ch` (the last `lanes` wide) of the `n`
    /// pixels of `span`, 6 pixels at a time.
    ///
    /// # Safety
    /// The CPU must have AVX2 and FMA; the `n` pixels of `span` and every tap of them lie
    /// inside the input, and `out` (and `res`) hold channels `ch..ch + lanes`
    /// of those pixels.
    #[allow(clippy::too_many_arguments)]
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn channels<const G: usize>(
        &self,
        n: usize,
        span: Span,
        taps: &[(usize, isize)],
        ch: usize,
        lanes: usize,
        out: *mut f32,
        res: Option<*const f32>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let (c, act) = (self.c, self.stage.activation);
            let (w, bias) = (self.weight.as_ptr(), self.bias.as_ptr());
            let mut j = 0;
            while j < n {
                let k = (n - j).min(PX);
                let sp = span.skip(j, c);
                dispatch!(
                    k,
                    P => dw_tile::<P, G>(run_of::<P>(sp, c), taps, c, ch, lanes, w, bias, out, res, act)
                );
                j += k;
            }
        }
    }
}

/// `dst[i*m + j] = src[i]`: each channel repeated `m` times.
#[target_feature(enable = "avx2,fma")]
fn expand(src: &[f32], m: usize, dst: &mut [f32]) {
    assert_eq!(src.len() * m, dst.len());
    let mut done = 0;
    if m == 2 {
        // Eight inputs become sixteen outputs: interleave each vector with
        // itself (within 128-bit halves), then put the halves in order.
        for (s, d) in src.chunks_exact(L).zip(dst.chunks_exact_mut(2 * L)) {
            let (s, d) = (s.as_ptr(), d.as_mut_ptr());
            // SAFETY: `s` has 8 elements and `d` 16 (exact chunks).
            unsafe {
                let x = _mm256_loadu_ps(s);
                let lo = _mm256_unpacklo_ps(x, x); // x0 x0 x1 x1 | x4 x4 x5 x5
                let hi = _mm256_unpackhi_ps(x, x); // x2 x2 x3 x3 | x6 x6 x7 x7
                _mm256_storeu_ps(d, _mm256_permute2f128_ps::<0x20>(lo, hi));
                _mm256_storeu_ps(d.add(L), _mm256_permute2f128_ps::<0x31>(lo, hi));
            }
        }
        done = src.len() / L * L;
    }
    for (e, x) in dst[done * m..].chunks_exact_mut(m).zip(&src[done..]) {
        e.fill(*x);
    }
}

/// `P` pixels x `G` vectors of channels starting at `ch`, of which `lanes`
/// (`8 * G`, or fewer for the one-vector tail, then masked) are computed.
///
/// # Safety
/// The CPU must have AVX2 and FMA; the pixels of `run` and every tap of them lie inside
/// the input, and `out` (and `res`) hold channels `ch..ch + lanes` of
/// each.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_tile<const P: usize, const G: usize>(
    run: Run<P>,
    taps: &[(usize, isize)],
    c: usize,
    ch: usize,
    lanes: usize,
    w: *const f32,
    bias: *const f32,
    out: *mut f32,
    res: Option<*const f32>,
    act: Activation,
) {
    // SAFETY: this function's contract (# Safety), which its caller keeps.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); G]; P];
        if lanes < L {
            // The channel tail (G == 1): masked loads read only `lanes` floats.
            let mask = lane_mask(lanes);
            for &(t, off) in taps {
                let wv = _mm256_maskload_ps(w.add(t * c + ch), mask);
                for (a, px) in acc.iter_mut().zip(run.px) {
                    let x = _mm256_maskload_ps(px.offset(off).add(ch), mask);
                    a[0] = _mm256_fmadd_ps(x, wv, a[0]);
                }
            }
            let b = _mm256_maskload_ps(bias.add(ch), mask);
            for (a, at) in acc.iter().zip(run.at) {
                let o = at + ch;
                store(
                    activate(a[0], b, act),
                    lanes,
                    out.add(o),
                    res.map(|r| r.add(o)),
                );
            }
            return;
        }
        for &(t, off) in taps {
            let wt = w.add(t * c + ch);
            let mut wv = [_mm256_setzero_ps(); G];
            for (g, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(wt.add(L * g));
            }
            for (a, px) in acc.iter_mut().zip(run.px) {
                let x = px.offset(off).add(ch);
                for g in 0..G {
                    a[g] = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(L * g)), wv[g], a[g]);
                }
            }
        }
        for (p, accs) in acc.iter().enumerate() {
            for (g, &a) in accs.iter().enumerate() {
                let o = run.at[p] + ch + L * g;
                let a = activate(a, _mm256_loadu_ps(bias.add(ch + L * g)), act);
                store(a, L, out.add(o), res.map(|r| r.add(o)));
            }
        }
    }
}
