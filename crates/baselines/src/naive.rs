//! The plain loop nests: one output element at a time, f32 accumulation,
//! bounds checks on every tap and every index. What a Rust programmer
//! writes first, and what you get without convjit.

use crate::geometry::activate1;
use convjit_ir::{Stage, StageKind, StageWeights};

pub fn run_stage(
    s: &Stage,
    w: &StageWeights,
    input: &[f32],
    output: &mut [f32],
    batch: usize,
    residual: Option<&[f32]>,
) {
    let (si, so) = (s.input, s.output);
    let [kh, kw] = s.kernel;
    let [sh, sw] = s.stride;
    let [dh, dw] = s.dilation;
    let (pt, pl) = (s.padding.top as isize, s.padding.left as isize);
    for n in 0..batch {
        for oy in 0..so.h {
            for ox in 0..so.w {
                for oc in 0..so.c {
                    let mut acc = 0f32;
                    for ky in 0..kh {
                        for kx in 0..kw {
                            let iy = (oy * sh + ky * dh) as isize - pt;
                            let ix = (ox * sw + kx * dw) as isize - pl;
                            if iy < 0 || ix < 0 || iy >= si.h as isize || ix >= si.w as isize {
                                continue;
                            }
                            let pixel = ((n * si.h + iy as usize) * si.w + ix as usize) * si.c;
                            match s.kind {
                                StageKind::Conv { cout, groups } => {
                                    let cg = si.c / groups;
                                    let c0 = oc / (cout / groups) * cg;
                                    for j in 0..cg {
                                        let wi = ((ky * kw + kx) * cg + j) * cout + oc;
                                        acc += input[pixel + c0 + j] * w.weight[wi];
                                    }
                                }
                                StageKind::Pointwise { cout, groups } => {
                                    let cg = si.c / groups;
                                    let c0 = oc / (cout / groups) * cg;
                                    for j in 0..cg {
                                        acc += input[pixel + c0 + j] * w.weight[j * cout + oc];
                                    }
                                }
                                StageKind::Depthwise { multiplier } => {
                                    let c = oc / multiplier;
                                    let wi = (ky * kw + kx) * so.c + oc;
                                    acc += input[pixel + c] * w.weight[wi];
                                }
                            }
                        }
                    }
                    if let Some(b) = &w.bias {
                        acc += b[oc];
                    }
                    acc = activate1(acc, s.activation);
                    let o = ((n * so.h + oy) * so.w + ox) * so.c + oc;
                    if let Some(r) = residual {
                        acc += r[o];
                    }
                    output[o] = acc;
                }
            }
        }
    }
}
