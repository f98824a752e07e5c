//! Hand-optimised kernels at the JIT's vector width: 128-bit `__m128` with
//! FMA. Every `#[target_feature]` function here is reached only through
//! [`Conv`] / [`Depthwise`], which are built only when [`available`] says
//! the CPU has the features.
//!
//! Both kernels split each stage into an *interior* (output pixels whose
//! every tap lies inside the input: blocks of 4 pixels along a row, no
//! bounds checks) and a *border* (one pixel at a time over the list of its
//! in-bounds taps, which is also how padding zeros are skipped).

use crate::geometry::{activate1, border_taps, interior, interior_taps};
use convjit_ir::{Activation, Stage, StageKind, StageWeights};
use std::arch::x86_64::*;

/// Output channels per register block of the conv / pointwise kernel.
const NR: usize = 12;
/// Pixels per interior block.
const PX: usize = 4;

pub fn available() -> bool {
    is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("avx")
        && is_x86_feature_detected!("sse4.1")
}

/// `act(acc + bias)`.
#[inline]
#[target_feature(enable = "fma,sse4.1")]
fn activate(acc: __m128, bias: __m128, act: Activation) -> __m128 {
    let a = _mm_add_ps(acc, bias);
    match act {
        Activation::None => a,
        // maxps/minps return the second operand when either is NaN: `a`
        // goes second, so NaN propagates as the interpreter's does.
        Activation::Relu => _mm_max_ps(_mm_setzero_ps(), a),
        Activation::Relu6 => _mm_min_ps(_mm_set1_ps(6.0), _mm_max_ps(_mm_setzero_ps(), a)),
    }
}

/// Stores lanes `0..n` (1..=4) of `a` at `out`, adding `res` first if given.
///
/// # Safety
/// The CPU must have FMA and SSE4.1; `out[0..n]` (and `res[0..n]`) must be valid: nothing
/// past lane `n` is touched.
#[inline]
#[target_feature(enable = "fma,sse4.1")]
unsafe fn store(a: __m128, n: usize, out: *mut f32, res: Option<*const f32>) {
    // SAFETY: this function's contract (# Safety), which its caller keeps.
    unsafe {
        if n >= 4 {
            let a = match res {
                Some(r) => _mm_add_ps(a, _mm_loadu_ps(r)),
                None => a,
            };
            _mm_storeu_ps(out, a);
        } else {
            // Channel tail: spill the vector, store the valid lanes one by one.
            let mut t = [0f32; 4];
            _mm_storeu_ps(t.as_mut_ptr(), a);
            for (j, &v) in t.iter().enumerate().take(n) {
                *out.add(j) = v + res.map_or(0.0, |r| *r.add(j));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Standard conv and pointwise: one register-blocked microkernel.

/// A conv or pointwise stage: weights repacked to `[Co/12][Kh*Kw][Ci][12]`
/// (the last block zero-padded), bias to `[Co/12][12]`.
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
            StageKind::Conv { cout, groups: 1 } | StageKind::Pointwise { cout, groups: 1 } => cout,
            StageKind::Conv { .. } | StageKind::Pointwise { .. } => panic!("grouped stage"),
            StageKind::Depthwise { .. } => panic!("not a conv stage"),
        };
        assert_eq!(cout, co);
        let taps = s.kernel[0] * s.kernel[1];
        let blocks = co.div_ceil(NR);
        // HWIO [tap][ci][co] -> [block][tap][ci][12].
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
        // kernel forms lies inside these slices (lengths asserted above).
        unsafe { self.run_fma(input, output, batch, res) }
    }

    /// # Safety
    /// The CPU must have FMA and SSE4.1; `input`, `output` (and `res`) hold `batch` images of
    /// the stage's input and output shapes.
    #[target_feature(enable = "fma,sse4.1")]
    unsafe fn run_fma(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        res: Option<&[f32]>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let s = self.stage.clone();
            let (ci, co) = (self.ci, self.co);
            let inp = input.as_ptr();
            let out = output.as_mut_ptr();
            let res = res.map(<[f32]>::as_ptr);
            if self.flat {
                let pixels = batch * s.input.h * s.input.w;
                let all = [(0, 0)];
                let mut p = 0;
                while p + PX <= pixels {
                    let px: [usize; PX] = std::array::from_fn(|j| p + j);
                    self.pixels(
                        px.map(|q| inp.add(q * ci)),
                        &all,
                        px.map(|q| q * co),
                        out,
                        res,
                    );
                    p += PX;
                }
                for q in p..pixels {
                    self.pixels([inp.add(q * ci)], &all, [q * co], out, res);
                }
                return;
            }
            let [sh, sw] = s.stride;
            let (si, so) = (s.input, s.output);
            let (y_lo, y_hi) = interior(si.h, so.h, s.kernel[0], sh, s.dilation[0], s.padding.top);
            let (x_lo, x_hi) = interior(si.w, so.w, s.kernel[1], sw, s.dilation[1], s.padding.left);
            let interior = std::mem::take(&mut self.interior);
            let mut border = std::mem::take(&mut self.border);
            for n in 0..batch {
                let img = inp.add(n * si.len());
                for oy in 0..so.h {
                    let (lo, hi) = if (y_lo..y_hi).contains(&oy) {
                        (x_lo, x_hi)
                    } else {
                        (0, 0)
                    };
                    let obase = (n * so.h + oy) * so.w;
                    let mut ox = lo;
                    while ox + PX <= hi {
                        let at: [usize; PX] = std::array::from_fn(|j| ox + j);
                        let px = at.map(|x| {
                            let iy = oy * sh - s.padding.top;
                            let ix = x * sw - s.padding.left;
                            img.add((iy * si.w + ix) * ci)
                        });
                        self.pixels(px, &interior, at.map(|x| (obase + x) * co), out, res);
                        ox += PX;
                    }
                    for x in (0..lo).chain(ox..so.w) {
                        border_taps(&s, ci, oy, x, &mut border);
                        self.pixels([img], &border, [(obase + x) * co], out, res);
                    }
                }
            }
            self.interior = interior;
            self.border = border;
        }
    }

    /// All output channels of `P` pixels: input pixel pointers `px` (each
    /// tap adds its offset), output element offsets `at`.
    ///
    /// # Safety
    /// The CPU must have FMA and SSE4.1; every tap of every pixel of `px` lies inside the
    /// input, and `out` (and `res`) hold every output channel of the pixels
    /// at `at`.
    #[inline]
    #[target_feature(enable = "fma,sse4.1")]
    unsafe fn pixels<const P: usize>(
        &self,
        px: [*const f32; P],
        taps: &[(usize, isize)],
        at: [usize; P],
        out: *mut f32,
        res: Option<*const f32>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            for b in 0..self.blocks {
                let lanes = (self.co - b * NR).min(NR);
                let w = self.packed.as_ptr().add(b * self.taps * self.ci * NR);
                let o = at.map(|a| out.add(a + b * NR));
                let r = res.map(|r| at.map(|a| r.add(a + b * NR)));
                tile::<P>(
                    px,
                    taps,
                    self.ci,
                    w,
                    self.bias.as_ptr().add(b * NR),
                    o,
                    r,
                    self.stage.activation,
                    lanes,
                );
            }
        }
    }
}

/// `P` pixels x 12 output channels: `3 * P` accumulators, one broadcast
/// input and three weight vectors per input channel and tap.
///
/// # Safety
/// The CPU must have FMA and SSE4.1; every pixel of `px` plus each tap's offset lies
/// inside the input, `w` and `bias` are a block of the packed weights and
/// bias, and `out` (and `res`) hold `lanes` channels at each pixel.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "fma,sse4.1")]
unsafe fn tile<const P: usize>(
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
        let mut acc = [[_mm_setzero_ps(); 3]; P];
        for &(t, off) in taps {
            let wt = w.add(t * ci * NR);
            let x = px.map(|p| p.offset(off));
            for i in 0..ci {
                let wp = wt.add(i * NR);
                let w0 = _mm_loadu_ps(wp);
                let w1 = _mm_loadu_ps(wp.add(4));
                let w2 = _mm_loadu_ps(wp.add(8));
                for p in 0..P {
                    let v = _mm_broadcast_ss(&*x[p].add(i));
                    acc[p][0] = _mm_fmadd_ps(v, w0, acc[p][0]);
                    acc[p][1] = _mm_fmadd_ps(v, w1, acc[p][1]);
                    acc[p][2] = _mm_fmadd_ps(v, w2, acc[p][2]);
                }
            }
        }
        for p in 0..P {
            for (v, &a) in acc[p].iter().enumerate() {
                let lane = v * 4;
                if lane >= lanes {
                    break;
                }
                let a = activate(a, _mm_loadu_ps(bias.add(lane)), act);
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
        unsafe { self.run_fma(input, output, batch, res) }
    }

    /// # Safety
    /// The CPU must have FMA and SSE4.1; `input`, `output` (and `res`) hold `batch` images of
    /// the stage's input and output shapes.
    #[target_feature(enable = "fma,sse4.1")]
    unsafe fn run_fma(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        res: Option<&[f32]>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let s = self.stage.clone();
            let (c, m) = (self.c, self.m);
            let [sh, sw] = s.stride;
            let (si, so) = (s.input, s.output);
            let (y_lo, y_hi) = interior(si.h, so.h, s.kernel[0], sh, s.dilation[0], s.padding.top);
            let (x_lo, x_hi) = interior(si.w, so.w, s.kernel[1], sw, s.dilation[1], s.padding.left);
            let interior = std::mem::take(&mut self.interior);
            let mut border = std::mem::take(&mut self.border);
            let out = output.as_mut_ptr();
            let res = res.map(<[f32]>::as_ptr);
            for n in 0..batch {
                let image = &input[n * si.len()..][..si.len()];
                let img = if m == 1 {
                    image.as_ptr()
                } else {
                    expand(image, m, &mut self.expanded);
                    self.expanded.as_ptr()
                };
                for oy in 0..so.h {
                    let (lo, hi) = if (y_lo..y_hi).contains(&oy) {
                        (x_lo, x_hi)
                    } else {
                        (0, 0)
                    };
                    let obase = (n * so.h + oy) * so.w;
                    let mut ox = lo;
                    while ox + PX <= hi {
                        let at: [usize; PX] = std::array::from_fn(|j| ox + j);
                        let px = at.map(|x| {
                            let iy = oy * sh - s.padding.top;
                            let ix = x * sw - s.padding.left;
                            img.add((iy * si.w + ix) * c)
                        });
                        self.pixels(px, &interior, at.map(|x| (obase + x) * c), out, res);
                        ox += PX;
                    }
                    for x in (0..lo).chain(ox..so.w) {
                        border_taps(&s, c, oy, x, &mut border);
                        self.pixels([img], &border, [(obase + x) * c], out, res);
                    }
                }
            }
            self.interior = interior;
            self.border = border;
        }
    }

    /// All channels of `P` pixels: 8 channels at a time (2 vectors x `P`
    /// accumulators), then 4, then the scalar tail.
    ///
    /// # Safety
    /// The CPU must have FMA and SSE4.1; every tap of every pixel of `px` lies inside the
    /// input, and `out` (and `res`) hold every channel of the pixels at `at`.
    #[inline]
    #[target_feature(enable = "fma,sse4.1")]
    unsafe fn pixels<const P: usize>(
        &self,
        px: [*const f32; P],
        taps: &[(usize, isize)],
        at: [usize; P],
        out: *mut f32,
        res: Option<*const f32>,
    ) {
        // SAFETY: this function's contract (# Safety), which its caller keeps.
        unsafe {
            let c = self.c;
            let act = self.stage.activation;
            let (w, bias) = (self.weight.as_ptr(), self.bias.as_ptr());
            let mut ch = 0;
            while ch + 8 <= c {
                dw_tile::<P, 2>(px, taps, c, ch, w, bias, at, out, res, act);
                ch += 8;
            }
            if ch + 4 <= c {
                dw_tile::<P, 1>(px, taps, c, ch, w, bias, at, out, res, act);
                ch += 4;
            }
            for ch in ch..c {
                for p in 0..P {
                    let mut acc = 0f32;
                    for &(t, off) in taps {
                        acc = (*px[p].offset(off).add(ch)).mul_add(*w.add(t * c + ch), acc);
                    }
                    let o = at[p] + ch;
                    *out.add(o) =
                        activate1(acc + *bias.add(ch), act) + res.map_or(0.0, |r| *r.add(o));
                }
            }
        }
    }
}

/// `dst[i*m + j] = src[i]`: each channel repeated `m` times.
#[target_feature(enable = "fma,sse4.1")]
fn expand(src: &[f32], m: usize, dst: &mut [f32]) {
    assert_eq!(src.len() * m, dst.len());
    let mut done = 0;
    if m == 2 {
        // Four inputs become eight outputs by interleaving with themselves.
        for (s, d) in src.chunks_exact(4).zip(dst.chunks_exact_mut(8)) {
            let (s, d) = (s.as_ptr(), d.as_mut_ptr());
            // SAFETY: `s` has 4 elements and `d` 8 (exact chunks).
            unsafe {
                let x = _mm_loadu_ps(s);
                _mm_storeu_ps(d, _mm_unpacklo_ps(x, x));
                _mm_storeu_ps(d.add(4), _mm_unpackhi_ps(x, x));
            }
        }
        done = src.len() / 4 * 4;
    }
    for (e, x) in dst[done * m..].chunks_exact_mut(m).zip(&src[done..]) {
        e.fill(*x);
    }
}

/// `P` pixels x `G` vectors of 4 channels starting at `ch`.
///
/// # Safety
/// The CPU must have FMA and SSE4.1; every pixel of `px` plus each tap's offset, and
/// its `4 * G` channels from `ch`, lie inside the input; `w` and `bias`
/// hold the weights and bias of `c` channels; `out` (and `res`) hold the
/// same channels of the pixels at `at`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "fma,sse4.1")]
unsafe fn dw_tile<const P: usize, const G: usize>(
    px: [*const f32; P],
    taps: &[(usize, isize)],
    c: usize,
    ch: usize,
    w: *const f32,
    bias: *const f32,
    at: [usize; P],
    out: *mut f32,
    res: Option<*const f32>,
    act: Activation,
) {
    // SAFETY: this function's contract (# Safety), which its caller keeps.
    unsafe {
        let mut acc = [[_mm_setzero_ps(); G]; P];
        for &(t, off) in taps {
            let wt = w.add(t * c + ch);
            let wv: [__m128; G] = std::array::from_fn(|g| _mm_loadu_ps(wt.add(4 * g)));
            for p in 0..P {
                let x = px[p].offset(off).add(ch);
                for g in 0..G {
                    acc[p][g] = _mm_fmadd_ps(_mm_loadu_ps(x.add(4 * g)), wv[g], acc[p][g]);
                }
            }
        }
        for (p, accs) in acc.iter().enumerate() {
            for (g, &a) in accs.iter().enumerate() {
                let o = at[p] + ch + 4 * g;
                let a = activate(a, _mm_loadu_ps(bias.add(ch + 4 * g)), act);
                store(a, 4, out.add(o), res.map(|r| r.add(o)));
            }
        }
    }
}
