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
use crate::proto::NodeProto;
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
    Skip(Skip),
}

/// Why a Conv node is left out: the reason, with what would make it
/// importable where something can, and its kind, which notes about many
/// nodes are grouped by.
#[derive(Clone, Debug)]
pub struct Skip {
    pub why: String,
    pub kind: &'static str,
}

/// A [`Refusal::Skip`] of `kind`.
fn skip(kind: &'static str, why: String) -> Refusal {
    Refusal::Skip(Skip { why, kind })
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
    match conv_stage(g, node, shapes) {
        Ok(stage) => Ok(Verdict::Take(stage)),
        Err(Refusal::Skip(why)) => Ok(Verdict::Skip(why)),
        Err(Refusal::Bad(why)) => Err(Error::new(format!("{}: {why}", describe(node)))),
        Err(Refusal::Model(e)) => Err(e),
    }
}

/// Why a Conv node does not become a stage.
enum Refusal {
    /// Valid ONNX the language cannot express.
    Skip(Skip),
    /// The node breaks the ONNX spec (said after the node's name).
    Bad(String),
    /// The model could not be read (said as is).
    Model(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Refusal {
        Refusal::Model(e)
    }
}

/// The weights' dims, `[M][C/G][Kh][Kw]`.
#[derive(Clone, Copy)]
struct WeightDims {
    m: usize,
    cg: usize,
    kh: usize,
    kw: usize,
}

/// A Conv's geometry once read from the node and its input's shape.
struct Geometry {
    wd: WeightDims,
    window: Window,
    groups: u64,
    /// The input's channels, height and width.
    chw: [u64; 3],
    /// The output along each spatial axis, with its padding.
    axes: [Axis; 2],
}

/// The stage a Conv node becomes, each check in turn: attributes, weights,
/// bias, window and groups, the input's shape, the output, convjit's limits.
fn conv_stage(g: &Graph, node: &NodeProto, shapes: &Shapes) -> Result<ConvStage, Refusal> {
    let attrs = Attrs::new(node);
    if let Some(a) = attrs.names().find(|a| !ATTRIBUTES.contains(a)) {
        return Err(Refusal::Bad(format!(
            "attribute '{a}' is not a Conv attribute"
        )));
    }
    let input = |i: usize| {
        node.input
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    };
    let (Some(x), Some(w)) = (input(0), input(1)) else {
        return Err(Refusal::Bad("a Conv needs an input and weights".into()));
    };
    let wd = weight_dims(g, w)?;
    let bias = match input(2) {
        None => None,
        Some(b) => Some(check_bias(g, b, wd.m)?),
    };
    let (window, groups) = window_and_groups(node, &attrs, &wd)?;
    let [c, h, wi] = input_chw(g, shapes, x)?;
    check_groups(&wd, c, groups)?;
    let axes: Option<[Axis; 2]> =
        (|| Some([window.axis(0, h, false)?, window.axis(1, wi, false)?]))();
    let Some([ah, aw]) = axes else {
        return Err(Refusal::Bad(format!(
            "its output would be empty for input {c}x{h}x{wi} (CxHxW)"
        )));
    };
    let geometry = Geometry {
        wd,
        window,
        groups,
        chw: [c, h, wi],
        axes: [ah, aw],
    };
    check_limits(&geometry)?;
    Ok(stage_of(&geometry, w, bias))
}

/// The dims of weights `w`, checked to be a float32 constant of rank 4.
fn weight_dims(g: &Graph, w: &str) -> Result<WeightDims, Refusal> {
    let Some(weight) = g.constant(w) else {
        return Err(computed(g, w, "weights"));
    };
    let wd = weight.dims()?;
    if wd.len() != 4 {
        let d = wd.len().saturating_sub(2);
        let fix = if d == 1 {
            ": export it as a 2-D convolution of height 1 (Unsqueeze before, Squeeze after)"
        } else {
            ""
        };
        return Err(skip(
            "not 2-D",
            format!("it is a {d}-D convolution (weights {wd:?}); convjit's are 2-D{fix}"),
        ));
    }
    if weight.data_type() != DataType::Float as i32 {
        return Err(skip(
            NOT_F32,
            format!(
                "its weights are {}; convjit computes in float32: export the model in float32",
                type_name(weight.data_type())
            ),
        ));
    }
    weight.check_f32s()?;
    Ok(WeightDims {
        m: wd[0],
        cg: wd[1],
        kh: wd[2],
        kw: wd[3],
    })
}

/// Bias `b`, checked to be a float32 constant of `m` values.
fn check_bias(g: &Graph, b: &str, m: usize) -> Result<String, Refusal> {
    let Some(c) = g.constant(b) else {
        return Err(computed(g, b, "bias"));
    };
    if c.dims()? != [m] {
        return Err(Refusal::Bad(format!(
            "bias '{b}' has dims {:?}, the weights need [{m}]",
            c.dims()?
        )));
    }
    if c.data_type() != DataType::Float as i32 {
        return Err(skip(
            NOT_F32,
            format!(
                "its bias is {}; convjit computes in float32: export the model in float32",
                type_name(c.data_type())
            ),
        ));
    }
    c.check_f32s()?;
    Ok(b.to_string())
}

/// The window (strides, dilations, pads) for the weights' kernel, and the
/// group count.
fn window_and_groups(
    node: &NodeProto,
    attrs: &Attrs,
    wd: &WeightDims,
) -> Result<(Window, u64), Refusal> {
    let (kh, kw) = (wd.kh, wd.kw);
    if let Some(k) = attrs.ints("kernel_shape")? {
        if k != [kh as i64, kw as i64] {
            return Err(Refusal::Bad(format!(
                "kernel_shape {k:?} disagrees with the weights' {kh}x{kw}"
            )));
        }
    }
    let window = Window::parse(node, vec![kh as u64, kw as u64])?;
    let groups = attrs.int("group")?.unwrap_or(1);
    if groups < 1 {
        return Err(Refusal::Bad(format!("group {groups} is not supported")));
    }
    Ok((window, groups as u64))
}

/// The channels, height and width of input `x`, if all are known.
fn input_chw(g: &Graph, shapes: &Shapes, x: &str) -> Result<[u64; 3], Refusal> {
    let Some([_, c, h, wi]) = shapes
        .get(x)
        .and_then(|d| <[Option<u64>; 4]>::try_from(d.clone()).ok())
    else {
        return Err(skip(UNKNOWN_SHAPE, unknown_input(g, shapes, x)));
    };
    let (Some(c), Some(h), Some(wi)) = (c, h, wi) else {
        return Err(skip(UNKNOWN_SHAPE, unknown_input(g, shapes, x)));
    };
    Ok([c, h, wi])
}

/// That there are output channels and `groups` divides the channels.
fn check_groups(wd: &WeightDims, c: u64, groups: u64) -> Result<(), Refusal> {
    let (m, cg) = (wd.m, wd.cg);
    if m == 0 {
        return Err(Refusal::Bad("its weights have no output channel".into()));
    }
    if !c.is_multiple_of(groups)
        || !(m as u64).is_multiple_of(groups)
        || (cg as u64).checked_mul(groups) != Some(c)
    {
        return Err(Refusal::Bad(format!(
            "group {groups} does not fit {c} input channels, {m} outputs and weights of {cg} \
             input channels"
        )));
    }
    Ok(())
}

/// convjit's limits (the IR's): every size, and elements per tensor.
fn check_limits(geometry: &Geometry) -> Result<(), Refusal> {
    let Geometry {
        wd: WeightDims { m, cg, kh, kw },
        ref window,
        chw: [c, h, wi],
        axes: [ah, aw],
        ..
    } = *geometry;
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
        return Err(skip(
            LIMITS,
            format!("its {name} {v} exceeds convjit's limit of {MAX_DIM}"),
        ));
    }
    if [c, h, wi, ah.out, aw.out].contains(&0) {
        return Err(skip(
            "empty",
            format!("its input ({c}x{h}x{wi}, CxHxW) or output is empty"),
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
        return Err(skip(
            LIMITS,
            format!(
                "its {name} has {v} elements per image, beyond convjit's limit of \
                 {MAX_TENSOR_ELEMS}"
            ),
        ));
    }
    Ok(())
}

/// The checked node as a stage: its op (depthwise, pointwise or conv),
/// geometry, and whether its padding is TensorFlow's `same`.
fn stage_of(geometry: &Geometry, weight: &str, bias: Option<String>) -> ConvStage {
    let Geometry {
        wd: WeightDims { m, kh, kw, .. },
        ref window,
        groups,
        chw: [c, h, wi],
        axes: [ah, aw],
    } = *geometry;
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
    ConvStage {
        op,
        input: Shape::new(h as usize, wi as usize, c),
        output: Shape::new(ah.out as usize, aw.out as usize, m),
        kernel: [kh, kw],
        stride,
        dilation,
        padding,
        same,
        groups,
        weight: weight.to_string(),
        bias,
    }
}

/// TensorFlow's `same` padding (before, after) along one axis.
fn same_padding(len: usize, k: usize, s: usize, d: usize) -> [usize; 2] {
    let out = len.div_ceil(s);
    let total = ((out - 1) * s + (k - 1) * d + 1).saturating_sub(len);
    [total / 2, total - total / 2]
}

const NOT_F32: &str = "not float32";
const UNKNOWN_SHAPE: &str = "input shape unknown";
const LIMITS: &str = "beyond convjit's limits";

/// Why the weights or bias `name` (`what`) are no constant, and what
/// would make them one: the node making them could not be folded (why),
/// or they depend on a graph input, found by following the first input
/// that is not constant up the graph.
fn computed(g: &Graph, name: &str, what: &str) -> Refusal {
    let mut at = name;
    // A bound on the walk: a chain of unfoldable nodes is named by its
    // first steps as well as by its root.
    for _ in 0..64 {
        let Some(i) = g.producer(at) else {
            let how = if at == name {
                "is".to_string()
            } else {
                format!("is computed in the graph from '{at}',")
            };
            return skip(
                "weights known only at run time",
                format!(
                    "its {what} tensor '{name}' {how} a graph input known only at run time: \
                     store the {what} in the model as an initializer"
                ),
            );
        };
        let node = &g.nodes[i];
        let first = node.output.first().map_or("", String::as_str);
        if let Some(why) = g.folded().why_not(first) {
            return skip(
                "weights computed by nodes convjit does not fold",
                format!(
                    "its {what} tensor '{name}' is computed by {} from constants, which convjit \
                     could not fold ({why}): store the {what} in the model as an initializer \
                     (onnxsim folds such nodes)",
                    describe(node)
                ),
            );
        }
        match node
            .input
            .iter()
            .find(|x| !x.is_empty() && g.constant(x).is_none())
        {
            Some(x) => at = x,
            None => break,
        }
    }
    skip(
        "weights computed in the graph",
        format!(
            "its {what} tensor '{name}' is computed in the graph from '{at}', which is not \
             constant: convjit takes {what} that are initializers, Constant nodes, or computed \
             from them by ops it folds ({})",
            crate::fold::OPS
        ),
    )
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
