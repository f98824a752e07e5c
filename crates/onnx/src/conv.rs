//! One ONNX `Conv` node as a convjit stage: which op (conv, depthwise,
//! pointwise, grouped), its geometry in the language's terms, and where
//! its weights are.
//!
//! A node the language cannot express although it is valid ONNX (a 3-D
//! convolution, weights computed at run time, float16, an unknown input
//! shape, sizes beyond convjit's limits) is left out with the reason; a
//! node that breaks the ONNX spec (an unknown auto_pad, a group that does
//! not divide the channels, weights of the wrong size) is an error.

use crate::attrs::Attrs;
use crate::geometry::{Axis, Window};
use crate::model::{describe, type_name, Graph};
use crate::proto::tensor_proto::DataType;
use crate::shapes::{show, Shapes};
use crate::Error;
use convjit_ir::{Padding, Shape, MAX_DIM, MAX_TENSOR_ELEMS};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    /// `conv KhxKw -> Co[, groups G]`.
    Conv { groups: usize },
    /// `depthwise KhxKw[, multiplier M]`: one group per input channel.
    Depthwise { multiplier: usize },
    /// `pointwise Co[, groups G]`: 1x1, stride 1, no padding.
    Pointwise { groups: usize },
}

/// A convertible Conv node.
#[derive(Clone, Debug)]
pub struct ConvStage {
    pub op: Op,
    pub input: Shape,
    pub output: Shape,
    pub kernel: [usize; 2],
    pub stride: [usize; 2],
    pub dilation: [usize; 2],
    pub padding: Padding,
    /// The padding is TensorFlow's `same` for this input (`pad same`).
    pub same: bool,
    pub groups: usize,
    /// The initializer or `Constant` output holding `[Co][Ci/G][Kh][Kw]`.
    pub weight: String,
    pub bias: Option<String>,
}

impl ConvStage {
    pub fn cout(&self) -> usize {
        self.output.c
    }

    /// The weight array's shape in the contract's layout.
    pub fn weight_shape(&self) -> Vec<usize> {
        let [kh, kw] = self.kernel;
        let ci = self.input.c / self.groups;
        match self.op {
            Op::Conv { .. } => vec![kh, kw, ci, self.cout()],
            Op::Depthwise { multiplier } => vec![kh, kw, self.input.c, multiplier],
            Op::Pointwise { .. } => vec![ci, self.cout()],
        }
    }
}

pub enum Verdict {
    Take(ConvStage),
    /// Valid ONNX the language cannot express, and why.
    Skip(String),
}

const ATTRIBUTES: &[&str] = &[
    "auto_pad",
    "dilations",
    "group",
    "kernel_shape",
    "pads",
    "strides",
];

/// Whether (and how) Conv node `index` becomes a stage.
pub fn analyse(g: &Graph, index: usize, shapes: &Shapes) -> Result<Verdict, Error> {
    let node = &g.nodes[index];
    let what = describe(node);
    let bad = |m: String| Err(Error::new(format!("{what}: {m}")));
    let skip = |m: String| Ok(Verdict::Skip(m));
    let attrs = Attrs::new(node);
    if let Some(a) = attrs.names().find(|a| !ATTRIBUTES.contains(a)) {
        return bad(format!("attribute '{a}' is not a Conv attribute"));
    }
    let input = |i: usize| {
        node.input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(x), Some(w)) = (input(0), input(1)) else {
        return bad("a Conv needs an input and weights".into());
    };
    let Some(weight) = g.constant(w) else {
        return skip(format!(
            "its weights '{w}' are computed in the graph (not an initializer or Constant)"
        ));
    };
    let wd = weight.dims()?;
    if wd.len() != 4 {
        return skip(format!(
            "it is a {}-D convolution (weights {wd:?}); convjit's are 2-D",
            wd.len().saturating_sub(2)
        ));
    }
    if weight.data_type() != DataType::Float as i32 {
        return skip(format!(
            "its weights are {}; convjit computes in float32",
            type_name(weight.data_type())
        ));
    }
    weight.check_f32s()?;
    let [m, cg, kh, kw] = [wd[0], wd[1], wd[2], wd[3]];
    let bias = match input(2) {
        None => None,
        Some(b) => {
            let Some(c) = g.constant(b) else {
                return skip(format!("its bias '{b}' is computed in the graph"));
            };
            if c.dims()? != [m] {
                return bad(format!(
                    "bias '{b}' has dims {:?}, the weights need [{m}]",
                    c.dims()?
                ));
            }
            if c.data_type() != DataType::Float as i32 {
                return skip(format!("its bias is {}", type_name(c.data_type())));
            }
            c.check_f32s()?;
            Some(b.to_string())
        }
    };
    if let Some(k) = attrs.ints("kernel_shape")? {
        if k != [kh as i64, kw as i64] {
            return bad(format!(
                "kernel_shape {k:?} disagrees with the weights' {kh}x{kw}"
            ));
        }
    }
    let window = Window::parse(node, vec![kh as u64, kw as u64])?;
    let groups = attrs.int("group")?.unwrap_or(1);
    if groups < 1 {
        return bad(format!("group {groups} is not supported"));
    }
    let groups = groups as u64;

    let Some([_, c, h, wi]) = shapes
        .get(x)
        .and_then(|d| <[Option<u64>; 4]>::try_from(d.clone()).ok())
    else {
        return skip(unknown_input(g, shapes, x));
    };
    let (Some(c), Some(h), Some(wi)) = (c, h, wi) else {
        return skip(unknown_input(g, shapes, x));
    };
    if m == 0 {
        return bad("its weights have no output channel".into());
    }
    if !c.is_multiple_of(groups)
        || !(m as u64).is_multiple_of(groups)
        || (cg as u64).checked_mul(groups) != Some(c)
    {
        return bad(format!(
            "group {groups} does not fit {c} input channels, {m} outputs and weights of {cg} \
             input channels"
        ));
    }
    let axes: Option<[Axis; 2]> =
        (|| Some([window.axis(0, h, false)?, window.axis(1, wi, false)?]))();
    let Some([ah, aw]) = axes else {
        return bad(format!(
            "its output would be empty for input {c}x{h}x{wi} (CxHxW)"
        ));
    };

    // convjit's limits (the IR's): every size, and elements per tensor.
    let sizes = [
        ("kernel", kh as u64),
        ("kernel", kw as u64),
        ("stride", window.strides[0]),
        ("stride", window.strides[1]),
        ("dilation", window.dilations[0]),
        ("dilation", window.dilations[1]),
        ("channel count", c),
        ("channel count", m as u64),
        ("height", h),
        ("width", wi),
        ("padding", ah.before.max(ah.after)),
        ("padding", aw.before.max(aw.after)),
    ];
    if let Some((name, v)) = sizes.iter().find(|(_, v)| *v > MAX_DIM) {
        return skip(format!(
            "its {name} {v} exceeds convjit's limit of {MAX_DIM}"
        ));
    }
    if [c, h, wi, ah.out, aw.out].contains(&0) {
        return skip(format!(
            "its input ({c}x{h}x{wi}, CxHxW) or output is empty"
        ));
    }
    // Each factor is at most MAX_DIM = 2^16 (cg <= c): no product of
    // three overflows; the weights' four are taken in u128.
    let weights = m as u128 * cg as u128 * kh as u128 * kw as u128;
    let elems = [
        ("input", c * h * wi),
        ("output", m as u64 * ah.out * aw.out),
        ("weights", weights.min(u64::MAX as u128) as u64),
    ];
    if let Some((name, v)) = elems.iter().find(|(_, v)| *v > MAX_TENSOR_ELEMS) {
        return skip(format!(
            "its {name} has {v} elements per image, beyond convjit's limit of {MAX_TENSOR_ELEMS}"
        ));
    }

    let (c, groups) = (c as usize, groups as usize);
    let stride = [window.strides[0] as usize, window.strides[1] as usize];
    let dilation = [window.dilations[0] as usize, window.dilations[1] as usize];
    let padding = Padding {
        top: ah.before as usize,
        bottom: ah.after as usize,
        left: aw.before as usize,
        right: aw.after as usize,
    };
    let flat = kh == 1 && kw == 1 && stride == [1, 1] && padding == Padding::default();
    let op = if groups > 1 && groups == c {
        Op::Depthwise { multiplier: m / c }
    } else if flat {
        Op::Pointwise { groups }
    } else {
        Op::Conv { groups }
    };
    let same = [(h, 0), (wi, 1)].iter().all(|&(len, i)| {
        let tf = same_padding(len as usize, [kh, kw][i], stride[i], dilation[i]);
        tf == [[padding.top, padding.bottom], [padding.left, padding.right]][i]
    });
    Ok(Verdict::Take(ConvStage {
        op,
        input: Shape::new(h as usize, wi as usize, c),
        output: Shape::new(ah.out as usize, aw.out as usize, m),
        kernel: [kh, kw],
        stride,
        dilation,
        padding,
        same,
        groups,
        weight: w.to_string(),
        bias,
    }))
}

/// TensorFlow's `same` padding (before, after) along one axis.
fn same_padding(len: usize, k: usize, s: usize, d: usize) -> [usize; 2] {
    let out = len.div_ceil(s);
    let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(len);
    [total / 2, total - total / 2]
}

/// Why the shape of a conv's input `x` is not known, and what would help.
fn unknown_input(g: &Graph, shapes: &Shapes, x: &str) -> String {
    let mut why = match shapes.get(x) {
        Some(d) if d.len() != 4 => format!("its input '{x}' has shape {} (not NCHW)", show(d)),
        Some(d) => format!(
            "its input '{x}' has shape {} (NCHW, unknown sizes)",
            show(d)
        ),
        None => format!("the shape of its input '{x}' is unknown"),
    };
    if let Some(note) = shapes.notes.get(x) {
        why += &format!(": {note}");
    }
    let is_graph_input = g.proto.input.iter().any(|v| v.name() == x);
    why += if is_graph_input {
        "; give it with --input-shape HxWxC"
    } else {
        "; give the model's input shape with --input-shape HxWxC, or add value_info \
         (onnx.shape_inference.infer_shapes)"
    };
    why
}
