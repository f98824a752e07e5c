//! Checking a layer built by hand ([`check_layer`]): everything
//! [`lower`] guarantees, so code generators can trust any
//! [`Layer`].

use crate::layer::*;
#[cfg(doc)]
use crate::lower;

/// Checks a [`Layer`] built by hand (its fields are public) against
/// everything [`lower`] guarantees, so code generators can trust it: the
/// input's sizes and every kernel, stride, dilation and multiplier in
/// `1..=MAX_DIM` (padding: up to the kernel's extent, which `same` may
/// need; outputs bounded by their element count), shapes chain from the layer's input, each output
/// shape is the one its input, kernel, stride, dilation, padding and
/// multiplier (or output channels) imply, pointwise stages are 1x1 with
/// stride and dilation 1 and no padding, tensors and weight arrays within
/// `MAX_TENSOR_ELEMS`, residual stages give back the input shape.
///
/// O(stages), no allocation on success: cheap enough to run before every
/// cache lookup (`Kernel::compile`, the AOT builder).
pub fn check_layer(layer: &Layer) -> Result<(), crate::DataError> {
    let err = |stage: Option<&Stage>, m: String| {
        let what = match stage {
            Some(s) => format!("layer '{}', stage '{}'", layer.name, s.name),
            None => format!("layer '{}'", layer.name),
        };
        crate::DataError::tensor(what, m)
    };
    let i = layer.input;
    if !(dim(i.h) && dim(i.w) && dim(i.c) && shape_ok(i)) {
        return Err(err(
            None,
            format!("input shape {} is out of range", layer.input),
        ));
    }
    let mut shape = layer.input;
    for s in &layer.stages {
        check_stage(layer, s, shape).map_err(|m| err(Some(s), m))?;
        shape = s.output;
    }
    Ok(())
}

/// A size of the language: in `1..=MAX_DIM`.
fn dim(n: usize) -> bool {
    (1..=MAX_DIM).contains(&(n as u64))
}

/// A tensor shape within the limits: no axis empty, at most
/// `MAX_TENSOR_ELEMS` elements. Stage outputs may exceed `MAX_DIM` along
/// an axis (padding adds up to twice the limit); their element count
/// bounds them.
fn shape_ok(s: Shape) -> bool {
    s.h >= 1
        && s.w >= 1
        && s.c >= 1
        && (s.h as u64)
            .saturating_mul(s.w as u64)
            .saturating_mul(s.c as u64)
            <= MAX_TENSOR_ELEMS
}

/// What is wrong with stage `s` of `layer`, which reads `shape` (the
/// output of the stage before it), if anything.
fn check_stage(layer: &Layer, s: &Stage, shape: Shape) -> Result<(), String> {
    if s.input != shape {
        return Err(format!(
            "input shape {} does not match the previous output {shape}",
            s.input
        ));
    }
    let sizes = s.kernel.iter().chain(&s.stride).chain(&s.dilation);
    if !sizes.copied().all(dim) {
        return Err(format!(
            "kernel {:?}, stride {:?} and dilation {:?} must be in 1..={MAX_DIM}",
            s.kernel, s.stride, s.dilation
        ));
    }
    let cout = output_channels(s)?;
    let want = output_shape(s, cout)?;
    if s.output != want {
        return Err(format!(
            "output shape {} is not the {want} its input, kernel, stride, \
             dilation, padding and channels give",
            s.output
        ));
    }
    if !shape_ok(s.output) {
        return Err(format!("output shape {} is out of range", s.output));
    }
    let weights = s
        .weight_shape()
        .iter()
        .fold(1u64, |n, &d| n.saturating_mul(d as u64));
    if weights > MAX_TENSOR_ELEMS {
        return Err(format!("{weights} weights exceed {MAX_TENSOR_ELEMS}"));
    }
    if s.residual && s.output != layer.input {
        return Err(format!(
            "residual: output {} differs from the layer's input {}",
            s.output, layer.input
        ));
    }
    Ok(())
}

/// The output channels stage `s`'s kind gives, once its channels, groups
/// and multiplier are in range and a pointwise stage is a plain 1x1.
fn output_channels(s: &Stage) -> Result<usize, String> {
    if let StageKind::Conv { cout, groups } | StageKind::Pointwise { cout, groups } = s.kind {
        if !dim(cout) {
            return Err(format!("{cout} output channels is out of range"));
        }
        if groups == 0 || !s.input.c.is_multiple_of(groups) || !cout.is_multiple_of(groups) {
            return Err(format!(
                "{groups} groups must divide the {} input and {cout} output channels",
                s.input.c
            ));
        }
    }
    match s.kind {
        StageKind::Conv { cout, .. } => Ok(cout),
        StageKind::Pointwise { cout, .. } => {
            let p = s.padding;
            if s.kernel != [1, 1]
                || s.stride != [1, 1]
                || s.dilation != [1, 1]
                || p != Padding::default()
            {
                return Err("a pointwise stage is 1x1, stride 1, dilation 1, unpadded".into());
            }
            Ok(cout)
        }
        StageKind::Depthwise { multiplier } => {
            if !dim(multiplier) {
                return Err(format!("multiplier {multiplier} is out of range"));
            }
            Ok(s.input.c * multiplier)
        }
    }
}

/// The output shape (of `cout` channels) that stage `s`'s input, kernel,
/// stride, dilation and padding give, once its padding is within the
/// kernel's extent (or `MAX_DIM`) and the output is not empty.
fn output_shape(s: &Stage, cout: usize) -> Result<Shape, String> {
    let p = s.padding;
    let mut want = [0usize; 2];
    for (i, (len, [before, after])) in [
        (s.input.h, [p.top, p.bottom]),
        (s.input.w, [p.left, p.right]),
    ]
    .into_iter()
    .enumerate()
    {
        // All operands below 2^33 here: no overflow in u64.
        let extent = (s.kernel[i] as u64 - 1) * s.dilation[i] as u64 + 1;
        let max_pad = extent.max(MAX_DIM);
        if before as u64 > max_pad || after as u64 > max_pad {
            return Err(format!(
                "padding {p:?} exceeds the kernel's extent {extent}"
            ));
        }
        let padded = len as u64 + before as u64 + after as u64;
        if padded < extent {
            return Err("the output would be empty".into());
        }
        want[i] = ((padded - extent) / s.stride[i] as u64 + 1) as usize;
    }
    Ok(Shape::new(want[0], want[1], cout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lowering::tests::one;

    #[test]
    fn lowered_layers_pass_check_layer_and_hand_built_ones_may_not() {
        for src in [
            "layer t { input 12x12x3\n c: conv 5x5 -> 256, separable depthwise, bias }",
            "layer t { input 9x8x6\n c: conv 4x3 -> 7, separable spatial, stride 2, pad same }",
            "layer t { input 1x1x8192\n d: depthwise 3x3, dilation 65536, pad same }",
            "layer t { input 8x8x4\n e: pointwise 8\n d: depthwise 3x3, multiplier 2, pad 1 1 2 0\n p: pointwise 4, residual }",
        ] {
            check_layer(&one(src)).unwrap();
        }
        let good =
            one("layer t { input 8x8x4\n d: depthwise 3x3, pad same\n p: pointwise 4, residual }");
        let bad = |f: &dyn Fn(&mut Layer)| {
            let mut l = good.clone();
            f(&mut l);
            check_layer(&l)
                .expect_err("inconsistent layer accepted")
                .to_string()
        };
        // Shapes that do not chain.
        let e = bad(&|l| l.stages[1].input.c = 5);
        assert!(e.contains("does not match the previous output"), "{e}");
        // An output the stage cannot produce.
        let e = bad(&|l| l.stages[0].output.w = 9);
        assert!(e.contains("is not the 8x8x4"), "{e}");
        assert!(e.starts_with("layer 't', stage 'd'"), "{e}");
        let e = bad(&|l| l.stages[0].padding.left = 0);
        assert!(e.contains("is not the"), "{e}");
        // Kinds and sizes.
        assert!(bad(&|l| l.stages[1].kernel = [3, 3]).contains("pointwise"));
        assert!(bad(&|l| l.stages[0].stride = [0, 1]).contains("must be in"));
        assert!(bad(&|l| l.stages[0].dilation = [1, usize::MAX]).contains("must be in"));
        assert!(
            bad(&|l| l.stages[0].kind = StageKind::Depthwise { multiplier: 0 })
                .contains("multiplier")
        );
        assert!(bad(&|l| l.stages[0].padding.top = usize::MAX).contains("padding"));
        assert!(bad(&|l| l.input.h = 0).contains("input shape"));
        let e = bad(&|l| {
            l.stages[1].kind = StageKind::Pointwise {
                cout: usize::MAX,
                groups: 1,
            };
            l.stages[1].output.c = usize::MAX;
        });
        assert!(e.contains("out of range"), "{e}");
        // A residual whose output is not the input's shape.
        let e = bad(&|l| {
            l.stages[1].kind = StageKind::Pointwise { cout: 6, groups: 1 };
            l.stages[1].output.c = 6;
        });
        assert!(e.contains("residual"), "{e}");
    }
}
