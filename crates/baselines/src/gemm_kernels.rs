//! Pointwise and standard conv through the `gemm` crate (single thread):
//! pointwise is one `[N*H*W, Ci] x [Ci, Co]` product; conv is im2col into a
//! `[Ho*Wo, Kh*Kw*Ci]` patch matrix per image, times the HWIO weights viewed
//! as `[Kh*Kw*Ci, Co]`. Bias, activation and residual follow in one pass.

use crate::epilogue;
use convjit_ir::{Stage, StageKind, StageWeights};
use gemm::{gemm, Parallelism};

pub struct Gemm {
    stage: Stage,
    weight: Vec<f32>,
    bias: Option<Vec<f32>>,
    /// The patch matrix of one image; empty when the stage needs none
    /// (a 1x1, stride 1, unpadded stage reads its input as it is).
    patches: Vec<f32>,
}

impl Gemm {
    pub fn new(s: &Stage, w: &StageWeights) -> Gemm {
        assert!(
            !matches!(s.kind, StageKind::Depthwise { .. }),
            "gemm runs conv and pointwise stages only"
        );
        let [kh, kw] = s.kernel;
        let direct = kh == 1
            && kw == 1
            && s.stride == [1, 1]
            && s.input.h == s.output.h
            && s.input.w == s.output.w;
        let patches = if direct {
            Vec::new()
        } else {
            vec![0.0; s.output.h * s.output.w * kh * kw * s.input.c]
        };
        Gemm {
            stage: s.clone(),
            weight: w.weight.clone(),
            bias: w.bias.clone(),
            patches,
        }
    }

    pub fn run(
        &mut self,
        input: &[f32],
        output: &mut [f32],
        batch: usize,
        residual: Option<&[f32]>,
    ) {
        let s = &self.stage;
        let (ci, co) = (s.input.c, s.output.c);
        if self.patches.is_empty() {
            // Pointwise: all images' pixels are the rows of one matrix.
            matmul(
                batch * s.input.h * s.input.w,
                ci,
                co,
                input,
                &self.weight,
                output,
            );
        } else {
            let k = s.kernel[0] * s.kernel[1] * ci;
            let m = s.output.h * s.output.w;
            for n in 0..batch {
                let img = &input[n * s.input.len()..][..s.input.len()];
                im2col(s, img, &mut self.patches);
                matmul(
                    m,
                    k,
                    co,
                    &self.patches,
                    &self.weight,
                    &mut output[n * m * co..][..m * co],
                );
            }
        }
        epilogue(output, co, self.bias.as_deref(), s.activation, residual);
    }
}

/// `c[m][n] = a[m][k] x b[k][n]`, all row-major and dense.
fn matmul(m: usize, k: usize, n: usize, a: &[f32], b: &[f32], c: &mut [f32]) {
    assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
    // SAFETY: the three matrices lie inside the slices (checked above) with
    // the strides given; `c` does not alias `a` or `b` (a `&mut` borrow).
    unsafe {
        gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            1,
            n as isize,
            false,
            a.as_ptr(),
            1,
            k as isize,
            b.as_ptr(),
            1,
            n as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            Parallelism::None,
        );
    }
}

/// Row `oy * Wo + ox` of `patches` is the receptive field of that output
/// pixel, `[Kh][Kw][Ci]` (zeros where it falls into the padding), matching
/// the HWIO weight rows.
fn im2col(s: &Stage, img: &[f32], patches: &mut [f32]) {
    let (si, so) = (s.input, s.output);
    let [kh, kw] = s.kernel;
    let [sh, sw] = s.stride;
    let [dh, dw] = s.dilation;
    let (pt, pl) = (s.padding.top as isize, s.padding.left as isize);
    let ci = si.c;
    let row = kh * kw * ci;
    for oy in 0..so.h {
        for ox in 0..so.w {
            let dst = &mut patches[(oy * so.w + ox) * row..][..row];
            for ky in 0..kh {
                let iy = (oy * sh + ky * dh) as isize - pt;
                for kx in 0..kw {
                    let ix = (ox * sw + kx * dw) as isize - pl;
                    let d = &mut dst[(ky * kw + kx) * ci..][..ci];
                    if iy < 0 || ix < 0 || iy >= si.h as isize || ix >= si.w as isize {
                        d.fill(0.0);
                    } else {
                        let at = (iy as usize * si.w + ix as usize) * ci;
                        d.copy_from_slice(&img[at..at + ci]);
                    }
                }
            }
        }
    }
}
