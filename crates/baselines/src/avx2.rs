//! Hand-optimised kernels at 256 bits: `__m256` with AVX2 and FMA, written
//! as one would by hand for a library (XNNPACK's 6x16 f32 GEMM microkernel
//! is the model for the conv / pointwise tile). Every `#[target_feature]`
//! function here is reached only through [`Conv`] / [`Depthwise`], which
//! are built only when [`available`] says the CPU has the features.
//!
//! The structure is the sse128 family's (`sse.rs`): each stage splits into
//! an *interior* (output pixels whose every tap lies inside the input:
//! blocks of 6 pixels along a row, no bounds checks) and a *border* (one
//! pixel at a time over its in-bounds taps, which skips padding zeros).
//! Channel tails never touch memory outside the buffers: partial vectors are
//! read with `_mm256_maskload_ps` and written with `_mm256_maskstore_ps`
//! (masked-off lanes are neither read nor written), and packed weights and
//! biases are zero-padded to whole vectors.

use crate::geometry::{border_taps, interior, interior_taps};
use convjit_ir::{Activation, Stage, StageKind, StageWeights};
use std::arch::x86_64::*;

/// Lanes of one `__m256`.
const L: usize = 8;
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
        Activation::Relu => _mm256_max_ps(a, _mm256_setzero_ps()),
        Activation::Relu6 => {
            _mm256_min_ps(_mm256_max_ps(a, _mm256_setzero_ps()), _mm256_set1_ps(6.0))
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

/// Runs `block::<P>` for a run of `n` (1..=6) pixels: the remainder of a row
/// (or of a flat stage) after its whole 6-pixel blocks.
macro_rules! dispatch {
    ($n:expr, $f:ident($($arg:expr),*)) => {
        match $n {
            1 => $f::<1>($($arg),*),
            2 => $f::<2>($($arg),*),
            3 => $f::<3>($($arg),*),
            4 => $f::<4>($($arg),*),
            5 => $f::<5>($($arg),*),
            6 => $f::<6>($($arg),*),
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

/// The pixels `x0..x0 + P` of interior output row `oy` of image `img`.
///
/// # Safety
/// The pixels must be interior (every tap inside the image).
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn interior_run<const P: usize>(
    s: &Stage,
    c: usize,
    img: *const f32,
    oy: usize,
    x0: usize,
    obase: usize,
    co: usize,
) -> Run<P> {
    let [sh, sw] = s.stride;
    let iy = oy * sh - s.padding.top;
    let mut run = Run {
        px: [img; P],
        at: [0; P],
    };
    for j in 0..P {
        let ix = (x0 + j) * sw - s.padding.left;
        run.px[j] = img.add((iy * s.input.w + ix) * c);
        run.at[j] = (obase + x0 + j) * co;
    }
    run
}

/// Row by row over `batch` images: interior pixels in blocks of 6 (then one
/// block of the remainder), border pixels one at a time. `block(n, img, oy,
/// x0, obase)` runs `n` interior pixels; `border(img, oy, x, obase)` one
/// border pixel.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn rows(
    s: &Stage,
    batch: usize,
    image: impl Fn(usize) -> *const f32,
    mut block: impl FnMut(usize, *const f32, usize, usize, usize),
    mut border: impl FnMut(*const f32, usize, usize, usize),
) {
    let [sh, sw] = s.stride;
    let (si, so) = (s.input, s.output);
    let (y_lo, y_hi) = interior(si.h, so.h, s.kernel[0], sh, s.dilation[0], s.padding.top);
    let (x_lo, x_hi) = interior(si.w, so.w, s.kernel[1], sw, s.dilation[1], s.padding.left);
    for n in 0..batch {
        let img = image(n);
        for oy in 0..so.h {
            let (lo, hi) = if (y_lo..y_hi).contains(&oy) {
                (x_lo, x_hi)
            } else {
                (0, 0)
            };
            let obase = (n * so.h + oy) * so.w;
            let mut ox = lo;
            while ox < hi {
                let k = (hi - ox).min(PX);
                block(k, img, oy, ox, obase);
                ox += k;
            }
            for x in (0..lo).chain(hi.max(lo)..so.w) {
                border(img, oy, x, obase);
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
    /// All taps, offsets from the tap-(0, 0) pixel.
    interior: Vec<(usize, isize)>,
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
            StageKind::Conv { cout } | StageKind::Pointwise { cout } => cout,
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
            interior: interior_taps(s, ci),
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        res: Option<&[f32]>,
    ) {
        let (ci, co) = (self.ci, self.co);
        let inp = input.as_ptr();
        let out = output.as_mut_ptr();
        let res = res.map(<[f32]>::as_ptr);
        if self.flat {
            let pixels = batch * self.stage.input.h * self.stage.input.w;
            let all = [(0, 0)];
            let mut p = 0;
            while p < pixels {
                let k = (pixels - p).min(PX);
                dispatch!(k, flat_block(self, inp, p, &all, out, res));
                p += k;
            }
            return;
        }
        let interior = std::mem::take(&mut self.interior);
        let mut border = std::mem::take(&mut self.border);
        let s = self.stage.clone();
        let this = &*self;
        rows(
            &s,
            batch,
            |n| inp.add(n * s.input.len()),
            |k, img, oy, x0, obase| {
                dispatch!(
                    k,
                    interior_block(this, &s, img, oy, x0, obase, &interior, out, res)
                )
            },
            |img, oy, x, obase| {
                border_taps(&s, ci, oy, x, &mut border);
                let run = Run {
                    px: [img],
                    at: [(obase + x) * co],
                };
                this.pixels(run, &border, out, res);
            },
        );
        self.interior = interior;
        self.border = border;
    }

    /// All output channels of the pixels of `run`: 16 channels at a time,
    /// the last block 8 wide when at most 8 channels remain.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pixels<const P: usize>(
        &self,
        run: Run<P>,
        taps: &[(usize, isize)],
        out: *mut f32,
        res: Option<*const f32>,
    ) {
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

/// Pixels `p..p + P` of a flat stage.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn flat_block<const P: usize>(
    conv: &Conv,
    inp: *const f32,
    p: usize,
    all: &[(usize, isize)],
    out: *mut f32,
    res: Option<*const f32>,
) {
    let mut run = Run {
        px: [inp; P],
        at: [0; P],
    };
    for j in 0..P {
        run.px[j] = inp.add((p + j) * conv.ci);
        run.at[j] = (p + j) * conv.co;
    }
    conv.pixels(run, all, out, res);
}

/// Interior pixels `x0..x0 + P` of row `oy` of a conv stage.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn interior_block<const P: usize>(
    conv: &Conv,
    s: &Stage,
    img: *const f32,
    oy: usize,
    x0: usize,
    obase: usize,
    taps: &[(usize, isize)],
    out: *mut f32,
    res: Option<*const f32>,
) {
    let run = interior_run::<P>(s, conv.ci, img, oy, x0, obase, conv.co);
    conv.pixels(run, taps, out, res);
}

/// `P` pixels x `G` vectors of output channels (`G * P` accumulators): per
/// input channel and tap, `G` weight vectors loaded once and one broadcast
/// input per pixel, shared across that pixel's `G` accumulators. `lanes`
/// (<= `8 * G`) output channels are stored, the last vector masked.
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
    expanded: Vec<f32>,
    interior: Vec<(usize, isize)>,
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
        Depthwise {
            stage: s.clone(),
            c,
            m,
            weight: w.weight.clone(),
            bias: w.bias.clone().unwrap_or_else(|| vec![0.0; c]),
            expanded: if m > 1 {
                vec![0.0; s.input.h * s.input.w * c]
            } else {
                Vec::new()
            },
            interior: interior_taps(s, c),
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

    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        res: Option<&[f32]>,
    ) {
        let s = self.stage.clone();
        let c = self.c;
        let out = output.as_mut_ptr();
        let res = res.map(<[f32]>::as_ptr);
        let interior = std::mem::take(&mut self.interior);
        let mut border = std::mem::take(&mut self.border);
        let mut expanded = std::mem::take(&mut self.expanded);
        let this = &*self;
        // Expand image `n` (multiplier > 1) when `rows` asks for its pointer.
        let exp = std::cell::RefCell::new(&mut expanded);
        rows(
            &s,
            batch,
            |n| {
                let image = &input[n * s.input.len()..][..s.input.len()];
                if this.m == 1 {
                    image.as_ptr()
                } else {
                    let mut e = exp.borrow_mut();
                    expand(image, this.m, &mut e[..]);
                    e.as_ptr()
                }
            },
            |k, img, oy, x0, obase| {
                dispatch!(
                    k,
                    dw_block(this, &s, img, oy, x0, obase, &interior, out, res)
                )
            },
            |img, oy, x, obase| {
                border_taps(&s, c, oy, x, &mut border);
                let run = Run {
                    px: [img],
                    at: [(obase + x) * c],
                };
                this.pixels(run, &border, out, res);
            },
        );
        self.interior = interior;
        self.border = border;
        self.expanded = expanded;
    }

    /// All channels of the pixels of `run`: 16 channels at a time (2 vectors
    /// x `P` accumulators), then 8, then one masked vector for the tail.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn pixels<const P: usize>(
        &self,
        run: Run<P>,
        taps: &[(usize, isize)],
        out: *mut f32,
        res: Option<*const f32>,
    ) {
        let c = self.c;
        let act = self.stage.activation;
        let (w, bias) = (self.weight.as_ptr(), self.bias.as_ptr());
        let mut ch = 0;
        while ch + 2 * L <= c {
            dw_tile::<P, 2>(run, taps, c, ch, L, w, bias, out, res, act);
            ch += 2 * L;
        }
        if ch + L <= c {
            dw_tile::<P, 1>(run, taps, c, ch, L, w, bias, out, res, act);
            ch += L;
        }
        if ch < c {
            dw_tile::<P, 1>(run, taps, c, ch, c - ch, w, bias, out, res, act);
        }
    }
}

/// Interior pixels `x0..x0 + P` of row `oy` of a depthwise stage.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn dw_block<const P: usize>(
    dw: &Depthwise,
    s: &Stage,
    img: *const f32,
    oy: usize,
    x0: usize,
    obase: usize,
    taps: &[(usize, isize)],
    out: *mut f32,
    res: Option<*const f32>,
) {
    let run = interior_run::<P>(s, dw.c, img, oy, x0, obase, dw.c);
    dw.pixels(run, taps, out, res);
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
