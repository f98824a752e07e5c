//! The reference interpreter: the oracle every generated kernel is
//! checked against. Plain loop nests that follow the contract's
//! definitions word for word, accumulating in f64; speed is no goal.

use crate::error::DataError;
use crate::layer::{Layer, Stage, StageKind};
use crate::precision::{round_bf16, Precision};
use crate::weights::{StageWeights, Weights};

/// Runs `layer` on `batch` NHWC images. Stages hand each other f32
/// tensors, as a real kernel chain does; each stage accumulates in f64.
pub fn interpret(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
) -> Result<Vec<f32>, DataError> {
    interpret_in(layer, weights, input, batch, Precision::F32)
}

/// [`interpret`] in `precision`: with [`Precision::Bf16`], every stage's
/// weights and input values are rounded to bf16 before they are
/// multiplied (products then exact, sums in f64); bias, activation and
/// the residual (the layer's input as given) in f32.
pub fn interpret_in(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    precision: Precision,
) -> Result<Vec<f32>, DataError> {
    check_input(layer, weights, input, batch, 1)?;
    check_memory(layer, batch, precision, false)?;
    // The layer's input borrowed: each stage's output is the next's input.
    let mut cur = std::borrow::Cow::Borrowed(input);
    for (stage, w) in layer.stages.iter().zip(weights.stages()) {
        let w = rounded(w, precision);
        let x = rounded_values(&cur, precision);
        let out = interpret_stage(stage, &w, &x, batch, stage.residual.then_some(input));
        cur = std::borrow::Cow::Owned(out);
    }
    Ok(cur.into_owned())
}

/// A stage's weights as `precision` multiplies them (the bias stays f32).
fn rounded(w: &StageWeights, precision: Precision) -> std::borrow::Cow<'_, StageWeights> {
    match precision {
        Precision::F32 => std::borrow::Cow::Borrowed(w),
        Precision::Bf16 => std::borrow::Cow::Owned(StageWeights {
            weight: w.weight.iter().map(|&x| precision.round(x)).collect(),
            bias: w.bias.clone(),
        }),
    }
}

/// Values as `precision` multiplies them.
fn rounded_values(v: &[f32], precision: Precision) -> std::borrow::Cow<'_, [f32]> {
    match precision {
        Precision::F32 => std::borrow::Cow::Borrowed(v),
        Precision::Bf16 => v.iter().map(|&x| precision.round(x)).collect(),
    }
}

/// The most multiply-accumulates the interpreter takes on (counting each
/// pass over a stage: the magnitudes are a second): about ten minutes at
/// its 0.5-1 x 10^9 a second. Beyond it the reference would look like a hang.
pub const MAX_INTERPRETED_MACS: u64 = 1 << 38;

/// Refuses `passes` interpretations of `layer` on `batch` images beyond
/// [`MAX_INTERPRETED_MACS`], with the reason.
pub fn check_work(layer: &Layer, batch: usize, passes: u64) -> Result<(), DataError> {
    let macs: u128 = layer.stages.iter().map(|s| s.macs() as u128).sum::<u128>()
        * batch as u128
        * passes as u128;
    if macs > MAX_INTERPRETED_MACS as u128 {
        return Err(DataError::tensor(
            "too much work for the interpreter",
            format!(
                "layer '{}' on {batch} images is {macs:.3e} multiply-accumulates{}, more than the \
                 {MAX_INTERPRETED_MACS:.3e} (about ten minutes) the reference interpreter takes on",
                layer.name,
                if passes > 1 {
                    format!(" in {passes} passes")
                } else {
                    String::new()
                },
            ),
        ));
    }
    Ok(())
}

/// The weights belong to `layer`, `input` holds `batch` images, and the
/// work of `passes` over the layer is within [`MAX_INTERPRETED_MACS`].
fn check_input(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    passes: u64,
) -> Result<(), DataError> {
    // (`check` first checks the layer itself: a hand-built one indexed
    // out of its tensors or divided by a zero group count.)
    weights.check(layer)?;
    check_work(layer, batch, passes)?;
    let want = batch.checked_mul(layer.input.len());
    if want != Some(input.len()) {
        return Err(DataError::tensor(
            "input",
            format!(
                "expected {batch} x {} = {} values, found {}",
                layer.input,
                want.map_or("too many".into(), |n| n.to_string()),
                input.len()
            ),
        ));
    }
    Ok(())
}

/// Per output, a bound on the magnitude of everything accumulated into it:
/// the interpreter on |input|, |weights| and |bias| with activations
/// removed. Every product a real computation adds (including those a later
/// stage makes of an earlier stage's rounding error) is bounded by it, and
/// relu/relu6 never increase an error, so an f32 implementation's error is
/// a small multiple of f32 epsilon times this bound: the scale for
/// comparing generated kernels with the interpreter.
///
/// One exception keeps the bound finite where the output is: where an
/// activation turns an infinite sum into a finite value (`relu(-inf) = 0`,
/// `relu6(+inf) = 6`), that value is exact in any implementation (the
/// same infinite product dominates its f32 sum), so its bound is the value
/// itself, not the infinite sum of magnitudes. A finite output then has a
/// finite bound; a NaN bound only comes with a NaN output.
pub fn magnitude(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
) -> Result<Vec<f32>, DataError> {
    Ok(interpret_with_magnitude(layer, weights, input, batch)?.1)
}

/// [`interpret`]'s output (the same, bit for bit) and [`magnitude`]'s
/// bounds, with two passes over each stage instead of three.
pub fn interpret_with_magnitude(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
) -> Result<(Vec<f32>, Vec<f32>), DataError> {
    interpret_with_magnitude_in(layer, weights, input, batch, Precision::F32)
}

/// [`interpret_in`]'s output and, per output, the scale `m` of its
/// tolerance (`compare`'s `REL_TOL * (1 + m)`) for a kernel computing the
/// same in `precision`.
///
/// In f32 that is [`magnitude`]. In bf16 a kernel's products are those of
/// the interpreter (bf16 x bf16 is exact in f32) and only its f32 sums
/// differ, as in f32; but a stage's input is a rounding of the previous
/// stage's output, and two values a sum's error apart may round to
/// neighbouring bf16 values. So each intermediate value `x` with
/// tolerance `t` carries `d`, the most its bf16 rounding can differ over
/// `[x - t, x + t]` (0 unless a rounding boundary lies there: rounding is
/// monotone, so the ends tell), and the next stage's outputs add
/// `sum |w| d` to their tolerance, as scale. Tight: almost every `d` is 0.
pub fn interpret_with_magnitude_in(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    precision: Precision,
) -> Result<(Vec<f32>, Vec<f32>), DataError> {
    check_input(layer, weights, input, batch, 2)?;
    check_memory(layer, batch, precision, true)?;
    use std::borrow::Cow;
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let abs_input = abs(input);
    // A bf16 rounding is at most 2^-8 larger than its value.
    let grow = match precision {
        Precision::F32 => 1.0,
        Precision::Bf16 => 1.0 + 1.0 / 256.0,
    };
    // The current tensor, its magnitude bound and its tolerance scale
    // (the bound plus what roundings may add, as scale: bf16 only, in f32
    // the bound itself). Borrowed until the first stage's outputs: the
    // reference of a large layer is within a few copies of its tensors.
    let (mut cur, mut mag) = (Cow::Borrowed(input), Cow::Borrowed(&abs_input[..]));
    let mut scale: Option<Vec<f32>> = None;
    // The layer's input is rounded the same way by every engine.
    let mut intermediate = false;
    for (stage, w) in layer.stages.iter().zip(weights.stages()) {
        let n = batch * stage.output.len();
        let (mut out, mut bound) = (vec![0f32; n], vec![0f32; n]);
        // The outputs whose activation made an infinite sum finite (their
        // value; NaN elsewhere: such a value is finite).
        let mut exact = vec![f32::NAN; n];
        let residual = stage.residual.then_some(input);
        let w = rounded(w, precision);
        let x = rounded_values(&cur, precision);
        for_each_sum(stage, &w.weight, w.bias.as_deref(), &x, batch, |o, acc| {
            let a = stage.activation.apply(acc);
            if acc.is_infinite() && a.is_finite() {
                exact[o] = a as f32;
            }
            out[o] = output_value(a, residual, o);
        });
        drop(x);
        let (wa, ba) = (abs(&w.weight), w.bias.as_deref().map(abs));
        let abs_residual = stage.residual.then_some(&abs_input[..]);
        let m_in: Cow<[f32]> = match precision {
            Precision::F32 => Cow::Borrowed(&mag),
            Precision::Bf16 => mag.iter().map(|&m| m * grow).collect(),
        };
        for_each_sum(stage, &wa, ba.as_deref(), &m_in, batch, |o, acc| {
            let e = exact[o];
            let sum = if e.is_nan() { acc } else { e.abs() as f64 };
            bound[o] = output_value(sum, abs_residual, o);
        });
        drop(m_in);
        if precision == Precision::Bf16 {
            let mut next_scale = bound.clone();
            if intermediate {
                // What the rounding of this stage's input may add.
                let scale = scale.as_deref().unwrap_or(&mag);
                let d: Vec<f32> = cur
                    .iter()
                    .zip(scale)
                    .map(|(&x, &m)| rounding_spread(x, crate::tolerance(m)))
                    .collect();
                for_each_sum(stage, &wa, None, &d, batch, |o, acc| {
                    if exact[o].is_nan() {
                        next_scale[o] += (acc / crate::REL_TOL as f64) as f32;
                    }
                });
            }
            scale = Some(next_scale);
        }
        (cur, mag) = (Cow::Owned(out), Cow::Owned(bound));
        intermediate = true;
    }
    let scale = scale.unwrap_or_else(|| mag.into_owned());
    Ok((cur.into_owned(), scale))
}

/// Refuses an interpretation whose tensors at their peak cannot fit
/// ([`crate::budget`]), counted as the interpreter allocates them (the
/// caller's input aside). Per stage: the input it reads (the layer's own,
/// borrowed, for the first) and the output it writes; in bf16 the rounded
/// input too. With `magnitudes` ([`interpret_with_magnitude_in`]): the
/// magnitudes of the layer's input, and per stage the magnitudes read,
/// the bound and exact values written; in bf16 also the grown magnitudes,
/// the scales in and out and the rounding spreads.
fn check_memory(
    layer: &Layer,
    batch: usize,
    precision: Precision,
    magnitudes: bool,
) -> Result<(), DataError> {
    let bf16 = precision == Precision::Bf16;
    // Tensors of a stage's input and output sizes it holds at once.
    let (ins, outs) = match (magnitudes, bf16) {
        (false, false) => (1, 1),
        (false, true) => (2, 1),
        (true, false) => (2, 3),
        (true, true) => (6, 4),
    };
    let peak = layer
        .stages
        .iter()
        .enumerate()
        .map(|(i, s)| {
            // The first stage reads the layer's input as given (f32).
            let reads = if i == 0 && !bf16 { 0 } else { ins };
            (s.input.len() as u128) * reads + (s.output.len() as u128) * outs
        })
        .max()
        .unwrap_or(0);
    let abs_input = if magnitudes {
        layer.input.len() as u128
    } else {
        0
    };
    let floats = (abs_input + peak) * batch as u128;
    crate::budget::check(
        format_args!("interpreting layer '{}' on {batch} images", layer.name),
        u64::try_from(floats * 4).ok(),
    )
}

/// The most two values within `t` of `x` can differ once rounded to bf16:
/// 0 where no rounding boundary lies in `[x - t, x + t]`.
fn rounding_spread(x: f32, t: f32) -> f32 {
    if !x.is_finite() || !t.is_finite() {
        return if x.is_finite() { f32::INFINITY } else { 0.0 };
    }
    let r = round_bf16(x);
    let (lo, hi) = (round_bf16(x - t), round_bf16(x + t));
    (r - lo).abs().max((hi - r).abs())
}

/// One primitive stage: convolution, `+ bias`, activation, `+ residual`.
/// Lengths must fit `stage` (the caller checked them).
pub fn interpret_stage(
    stage: &Stage,
    w: &StageWeights,
    input: &[f32],
    batch: usize,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let mut out = vec![0f32; batch * stage.output.len()];
    for_each_sum(
        stage,
        &w.weight,
        w.bias.as_deref(),
        input,
        batch,
        |o, acc| {
            out[o] = output_value(stage.activation.apply(acc), residual, o);
        },
    );
    out
}

/// Per output of `stage` on inputs of scale `m`, `sum |w| m + |bias|`
/// (+ `residual`'s scale): the direct sum's magnitude bound in f32, for
/// bounds carried across stages (`winograd::chain_magnitude`).
pub(crate) fn abs_sums(
    stage: &Stage,
    w: &StageWeights,
    m: &[f32],
    batch: usize,
    residual: Option<&[f32]>,
) -> Vec<f32> {
    let abs = |v: &[f32]| v.iter().map(|x| x.abs()).collect::<Vec<f32>>();
    let (wa, ba) = (abs(&w.weight), w.bias.as_deref().map(abs));
    let mut out = vec![0f32; batch * stage.output.len()];
    for_each_sum(stage, &wa, ba.as_deref(), m, batch, |o, acc| {
        out[o] = output_value(acc, residual, o);
    });
    out
}

/// An output from its activated sum: rounded to f32, `+ residual` in f32.
fn output_value(activated: f64, residual: Option<&[f32]>, o: usize) -> f32 {
    let v = activated as f32;
    residual.map_or(v, |r| v + r[o])
}

/// Calls `f(o, sum)` for every output `o` of `stage` (NHWC index) with its
/// convolution `+ bias`, accumulated in f64: only the taps inside the
/// input (padding adds nothing, not even `0 * weight`). Every output is
/// computed exactly once.
fn for_each_sum(
    stage: &Stage,
    weight: &[f32],
    bias: Option<&[f32]>,
    input: &[f32],
    batch: usize,
    mut f: impl FnMut(usize, f64),
) {
    let (si, so) = (stage.input, stage.output);
    let [kh, kw] = stage.kernel;
    let [sh, sw] = stage.stride;
    let [dh, dw] = stage.dilation;
    let (pt, pl) = (stage.padding.top as isize, stage.padding.left as isize);
    let at = |n: usize, y: usize, x: usize, c: usize| ((n * si.h + y) * si.w + x) * si.c + c;
    for n in 0..batch {
        for oy in 0..so.h {
            for ox in 0..so.w {
                for oc in 0..so.c {
                    let mut acc = 0f64;
                    for ky in 0..kh {
                        let iy = (oy * sh + ky * dh) as isize - pt;
                        for kx in 0..kw {
                            let ix = (ox * sw + kx * dw) as isize - pl;
                            // Outside the input is zero padding.
                            if iy < 0 || ix < 0 || iy >= si.h as isize || ix >= si.w as isize {
                                continue;
                            }
                            let (iy, ix) = (iy as usize, ix as usize);
                            acc += match stage.kind {
                                StageKind::Conv { cout, groups } => {
                                    // The input channels of `oc`'s group.
                                    let cg = si.c / groups;
                                    let c0 = oc / (cout / groups) * cg;
                                    (0..cg)
                                        .map(|j| {
                                            let wi = ((ky * kw + kx) * cg + j) * cout + oc;
                                            input[at(n, iy, ix, c0 + j)] as f64 * weight[wi] as f64
                                        })
                                        .sum::<f64>()
                                }
                                StageKind::Depthwise { multiplier } => {
                                    let (c, m) = (oc / multiplier, oc % multiplier);
                                    let wi = ((ky * kw + kx) * si.c + c) * multiplier + m;
                                    input[at(n, iy, ix, c)] as f64 * weight[wi] as f64
                                }
                                StageKind::Pointwise { cout, groups } => {
                                    let cg = si.c / groups;
                                    let c0 = oc / (cout / groups) * cg;
                                    (0..cg)
                                        .map(|j| {
                                            input[at(n, iy, ix, c0 + j)] as f64
                                                * weight[j * cout + oc] as f64
                                        })
                                        .sum::<f64>()
                                }
                            };
                        }
                    }
                    if let Some(b) = bias {
                        acc += b[oc] as f64;
                    }
                    f(((n * so.h + oy) * so.w + ox) * so.c + oc, acc);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-built layer (its fields are public) that `lower` could not
    /// give is an error of the interpreter and of the weights'
    /// constructors, not a panic (a zero group count divided, a stage's
    /// input larger than the layer's indexed out of the tensor).
    #[test]
    fn hand_built_layers_are_errors_not_panics() {
        let good = crate::compile_source(
            "layer l { input 8x8x4\n c: conv 3x3 -> 4, pad same\n d: depthwise 3x3, pad same }",
        )
        .unwrap()
        .remove(0);
        let w = Weights::random(&good, 1);
        let x = vec![1.0; 256];
        assert!(interpret(&good, &w, &x, 1).is_ok());
        let mut bad = Vec::new();
        let mut l = good.clone();
        l.stages[0].kind = StageKind::Conv { cout: 4, groups: 0 };
        bad.push(l);
        let mut l = good.clone();
        l.stages[1].kind = StageKind::Depthwise { multiplier: 0 };
        bad.push(l);
        let mut l = good.clone();
        l.stages[0].input = crate::Shape {
            h: 100,
            w: 100,
            c: 4,
        };
        bad.push(l);
        let mut l = good.clone();
        l.input.h = 0;
        bad.push(l);
        let mut l = good.clone();
        l.stages[1].residual = true;
        l.stages[1].output.c = 5;
        bad.push(l);
        for l in &bad {
            let _ = l.macs();
            assert!(l.weight_values().is_some());
            assert!(interpret(l, &w, &x, 1).is_err(), "{l:?}");
            assert!(interpret_with_magnitude(l, &w, &x, 1).is_err(), "{l:?}");
            assert!(Weights::try_random(l, 1).is_err(), "{l:?}");
            assert!(Weights::new(l, w.stages().to_vec()).is_err(), "{l:?}");
        }
    }

    /// Work past [`MAX_INTERPRETED_MACS`] is refused with the numbers,
    /// before any tensor is read; the passes count.
    #[test]
    fn refuses_hours_of_work() {
        let l = &crate::compile_source(
            "layer big { input 1024x1024x64\n c: conv 3x3 -> 64, pad same }",
        )
        .unwrap()[0];
        assert_eq!(l.macs(), 1024 * 1024 * 9 * 64 * 64);
        assert!(check_work(l, 1, 2).is_ok());
        let e = check_work(l, 8, 2).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "too much work for the interpreter: layer 'big' on 8 images is 6.185e11 \
                 multiply-accumulates in 2 passes"
            ),
            "{e}"
        );
        let w = Weights::random(l, 1);
        let e = interpret(l, &w, &[0.0; 4], 16).unwrap_err().to_string();
        assert!(e.contains("too much work"), "{e}");
    }
    use crate::compile_source;

    fn layer(src: &str) -> Layer {
        compile_source(src).unwrap().remove(0)
    }

    #[test]
    fn same_padding_3x3_box_filter_counts_neighbours() {
        let l = layer("layer b { input 3x4x1\n d: depthwise 3x3, pad same }");
        let w = Weights::new(
            &l,
            vec![StageWeights {
                weight: vec![1.0; 9],
                bias: None,
            }],
        )
        .unwrap();
        let out = interpret(&l, &w, &[1.0; 12], 1).unwrap();
        // Corners see 4 pixels, edges 6, the middle 9.
        assert_eq!(out, [4., 6., 6., 4., 6., 9., 9., 6., 4., 6., 6., 4.]);
    }

    #[test]
    fn multiplier_orders_output_channels_c_times_m_plus_m() {
        let l = layer("layer m { input 1x1x2\n d: depthwise 1x1, multiplier 2 }");
        // weight [1][1][C=2][M=2]
        let w = StageWeights {
            weight: vec![1., 2., 3., 4.],
            bias: None,
        };
        let w = Weights::new(&l, vec![w]).unwrap();
        let out = interpret(&l, &w, &[10., 100.], 1).unwrap();
        assert_eq!(out, [10., 20., 300., 400.]);
    }

    #[test]
    fn groups_read_only_their_input_channels() {
        // 4 inputs, 2 groups of 2 -> 2 outputs each: [Ci/G = 2][Co = 4].
        let l = layer("layer g { input 1x1x4\n p: pointwise 4, groups 2 }");
        let w = StageWeights {
            weight: vec![1., 2., 3., 4., 10., 20., 30., 40.],
            bias: None,
        };
        let w = Weights::new(&l, vec![w]).unwrap();
        let out = interpret(&l, &w, &[1., 2., 100., 1000.], 1).unwrap();
        // Outputs 0, 1 read inputs 0, 1; outputs 2, 3 read inputs 2, 3.
        assert_eq!(out, [1. + 20., 2. + 40., 300. + 30000., 400. + 40000.]);
        let c = layer("layer c { input 1x1x4\n c: conv 1x1 -> 4, groups 2 }");
        let cw = Weights::new(&c, vec![w.stages()[0].clone()]).unwrap();
        assert_eq!(interpret(&c, &cw, &[1., 2., 100., 1000.], 1).unwrap(), out);
    }

    #[test]
    fn bias_then_activation_then_residual() {
        let l = layer("layer r { input 1x1x1\n p: pointwise 1, bias, relu6, residual }");
        let w = StageWeights {
            weight: vec![10.0],
            bias: Some(vec![1.0]),
        };
        let w = Weights::new(&l, vec![w]).unwrap();
        // 2*10 + 1 = 21 -> relu6 -> 6, + input 2 = 8 (the residual is not clamped).
        assert_eq!(interpret(&l, &w, &[2.0], 1).unwrap(), [8.0]);
        assert_eq!(interpret(&l, &w, &[-2.0], 1).unwrap(), [-2.0]);
    }

    #[test]
    fn nan_propagates_and_infinities_follow_ieee() {
        use crate::layer::Activation;
        let (nan, inf) = (f64::NAN, f64::INFINITY);
        for a in [Activation::None, Activation::Relu, Activation::Relu6] {
            assert!(a.apply(nan).is_nan(), "{a:?}(NaN)");
        }
        assert_eq!(Activation::Relu.apply(-inf), 0.0);
        assert_eq!(Activation::Relu.apply(inf), inf);
        assert_eq!(Activation::Relu6.apply(inf), 6.0);
        assert_eq!(Activation::Relu6.apply(-inf), 0.0);
        assert_eq!(Activation::Relu6.apply(-2.0), 0.0);
        assert_eq!(Activation::Relu6.apply(2.5), 2.5);
        // Through a stage: relu6, then the residual (NaN + r stays NaN).
        let l = layer("layer r { input 1x1x1\n p: pointwise 1, bias, relu6, residual }");
        let w = Weights::new(
            &l,
            vec![StageWeights {
                weight: vec![1.0],
                bias: Some(vec![0.5]),
            }],
        )
        .unwrap();
        let run = |x: f32| interpret(&l, &w, &[x], 1).unwrap()[0];
        assert!(run(f32::NAN).is_nan());
        // relu6(+inf) + inf, relu6(-inf) + -inf: the residual is not clamped.
        assert_eq!(run(f32::INFINITY), f32::INFINITY);
        assert_eq!(run(f32::NEG_INFINITY), f32::NEG_INFINITY);
    }

    #[test]
    fn padding_taps_multiply_nothing() {
        // An infinite weight on a tap that is padding for the corner
        // outputs: `inf * 0` (NaN) is never formed there.
        let l = layer("layer p { input 2x2x1\n d: depthwise 3x3, pad same }");
        let mut k = vec![1.0; 9];
        k[0] = f32::INFINITY; // tap (-1, -1): inside only for output (1, 1)
        let w = Weights::new(
            &l,
            vec![StageWeights {
                weight: k,
                bias: None,
            }],
        )
        .unwrap();
        let out = interpret(&l, &w, &[1.0, 2.0, 3.0, 4.0], 1).unwrap();
        assert_eq!(out, [10.0, 10.0, 10.0, f32::INFINITY]);
        // A zero input under it: inf * 0 is NaN, where the tap is real.
        let out = interpret(&l, &w, &[0.0, 2.0, 3.0, 4.0], 1).unwrap();
        assert_eq!(out[..3], [9.0, 9.0, 9.0]);
        assert!(out[3].is_nan());
    }

    #[test]
    fn magnitude_is_finite_where_an_activation_clamps_an_infinity() {
        let l = layer("layer m { input 1x2x1\n a: pointwise 2, relu6\n b: pointwise 1, relu }");
        let w = Weights::new(
            &l,
            vec![
                StageWeights {
                    weight: vec![1.0, -1.0],
                    bias: None,
                },
                StageWeights {
                    weight: vec![2.0, 3.0],
                    bias: None,
                },
            ],
        )
        .unwrap();
        let x = [f32::INFINITY, 1.0];
        let (out, mag) = interpret_with_magnitude(&l, &w, &x, 1).unwrap();
        assert_eq!(out, interpret(&l, &w, &x, 1).unwrap());
        // Pixel 0: a = (relu6(inf), relu6(-inf)) = (6, 0) exactly, b = 12.
        assert_eq!(out[0], 12.0);
        assert_eq!(mag[0], 12.0);
        // Pixel 1: a = (1, 0), b = 2; its bound sums |products|: 2 + 3.
        assert_eq!((out[1], mag[1]), (2.0, 5.0));
        assert_eq!(magnitude(&l, &w, &x, 1).unwrap(), mag);
        // A NaN input: NaN output, NaN bound.
        let (out, mag) = interpret_with_magnitude(&l, &w, &[f32::NAN, 1.0], 1).unwrap();
        assert!(out[0].is_nan() && mag[0].is_nan());
    }

    #[test]
    fn strided_dilated_conv_reads_the_right_taps() {
        // 1 channel, 5 wide, kernel 1x2 dilation 3, stride 2: out[x] = in[2x]*a + in[2x+3]*b.
        let l = layer("layer s { input 1x5x1\n c: conv 1x2 -> 1, stride 2, dilation 3 }");
        let w = Weights::new(
            &l,
            vec![StageWeights {
                weight: vec![1.0, 10.0],
                bias: None,
            }],
        )
        .unwrap();
        let out = interpret(&l, &w, &[1., 2., 3., 4., 5.], 1).unwrap();
        assert_eq!(out, [1. + 40.]);
    }

    #[test]
    fn batch_images_are_independent_and_lengths_checked() {
        let l = layer("layer p { input 2x2x3\n p: pointwise 2, bias }");
        let w = Weights::random(&l, 1);
        let a: Vec<f32> = (0..12).map(|i| i as f32).collect();
        let b: Vec<f32> = (0..12).map(|i| -(i as f32)).collect();
        let both = interpret(&l, &w, &[a.clone(), b.clone()].concat(), 2).unwrap();
        let one_a = interpret(&l, &w, &a, 1).unwrap();
        let one_b = interpret(&l, &w, &b, 1).unwrap();
        assert_eq!(both, [one_a, one_b].concat());
        let err = interpret(&l, &w, &a, 2).unwrap_err().to_string();
        assert_eq!(err, "input: expected 2 x 2x2x3 = 24 values, found 12");
    }

    #[test]
    fn bf16_rounds_weights_and_stage_inputs_not_bias_or_residual() {
        // One pointwise stage: x = 1 + 2^-9 rounds to 1 (bf16's step at 1 is
        // 2^-7), w = 3 + 2^-8 to 3 (step 2^-6), bias 2^-10 and the residual
        // (the unrounded x) stay.
        let l = layer("layer b { input 1x1x1\n p: pointwise 1, bias, residual }");
        let x = 1.0 + 1.0 / 512.0;
        let w = Weights::new(
            &l,
            vec![StageWeights {
                weight: vec![3.0 + 1.0 / 256.0],
                bias: Some(vec![1.0 / 1024.0]),
            }],
        )
        .unwrap();
        let got = interpret_in(&l, &w, &[x], 1, Precision::Bf16).unwrap();
        assert_eq!(got, [3.0 + 1.0 / 1024.0 + x]);
        let f32 = interpret(&l, &w, &[x], 1).unwrap()[0];
        assert_eq!(
            f32,
            ((x as f64 * (3.0 + 1.0 / 256.0) + 1.0 / 1024.0) as f32) + x
        );
        // A second stage rounds the first's output where it enters.
        let l = layer("layer c { input 1x1x1\n a: pointwise 1\n b: pointwise 1 }");
        let w = Weights::new(
            &l,
            vec![
                StageWeights {
                    weight: vec![1.0],
                    bias: None,
                },
                StageWeights {
                    weight: vec![1.0],
                    bias: None,
                },
            ],
        )
        .unwrap();
        assert_eq!(
            interpret_in(&l, &w, &[x], 1, Precision::Bf16).unwrap(),
            [1.0]
        );
    }

    #[test]
    fn bf16_tolerances_cover_roundings_of_intermediates() {
        // The first stage's output lies within its f32 tolerance of a bf16
        // rounding boundary (1 + 2^-8, halfway between 1 and 1 + 2^-7): a
        // kernel may round it either way, and the scale must say so.
        let l = layer("layer c { input 1x1x2\n a: pointwise 1\n b: pointwise 1 }");
        let w = Weights::new(
            &l,
            vec![
                StageWeights {
                    weight: vec![1.0, 1.0],
                    bias: None,
                },
                StageWeights {
                    weight: vec![100.0],
                    bias: None,
                },
            ],
        )
        .unwrap();
        let x = [1.0, 1.0 / 256.0];
        let (out, scale) = interpret_with_magnitude_in(&l, &w, &x, 1, Precision::Bf16).unwrap();
        // 1 + 2^-8 ties to 1: 100.
        assert_eq!(out, [100.0]);
        // Rounded up instead: 100 * (1 + 2^-7) = 100.78, within tolerance.
        assert!(crate::tolerance(scale[0]) >= 100.0 / 128.0, "{scale:?}");
        // Far from a boundary, nothing is added: the f32 scale.
        let x = [1.0, 3.0 / 1024.0];
        let (_, far) = interpret_with_magnitude_in(&l, &w, &x, 1, Precision::Bf16).unwrap();
        assert!(crate::tolerance(far[0]) < 0.01, "{far:?}");
    }
}

#[cfg(test)]
mod bf16_props {
    use super::*;
    use crate::random_layer::{layer_case, Limits};
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// The bf16 reference stays within the bf16 bound of the f32 one.
        #[test]
        fn bf16_is_within_its_bound_of_f32(case in layer_case(Limits::SMALL)) {
            let Ok(mut layers) = crate::compile_source(&case.src) else { return Ok(()) };
            let l = layers.remove(0);
            let w = Weights::random(&l, case.seed);
            let x = crate::Rng::new(case.seed ^ 0x5555).vec(l.input.len() * case.batch, case.scale);
            let (want, mag) = interpret_with_magnitude(&l, &w, &x, case.batch).unwrap();
            let got = interpret_in(&l, &w, &x, case.batch, Precision::Bf16).unwrap();
            let c = crate::compare_within(&got, &want, &mag, crate::bf16_rel_tol(l.stages.len()));
            // That roundings happen at all is pinned by the unit tests above: a
            // small layer's values may all be exact in bf16 (one tap, zeros).
            prop_assert!(c.pass(), "{}: {:?}", case.src, c);
        }
    }
}
