//! The layer IR: primitive stages with every shape and padding resolved.

use serde::Serialize;
use std::fmt;

/// Largest number accepted for any one size (spatial dims, channels,
/// kernel, stride, dilation, padding, multiplier).
pub const MAX_DIM: u64 = 1 << 16;
/// Largest tensor (per image) or weight array, in elements: 1 GiB of f32.
/// Anything bigger could never be allocated here, so it is an error up front.
pub const MAX_TENSOR_ELEMS: u64 = 1 << 28;

/// Height x width x channels of one image (NHWC without the N).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Shape {
    /// Height (rows).
    pub h: usize,
    /// Width (columns).
    pub w: usize,
    /// Channels.
    pub c: usize,
}

impl Shape {
    /// `h x w x c`.
    pub fn new(h: usize, w: usize, c: usize) -> Shape {
        Shape { h, w, c }
    }

    /// Elements per image.
    pub fn len(&self) -> usize {
        self.h * self.w * self.c
    }

    /// No elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "{}x{}x{}", self.h, self.w, self.c)
    }
}

/// Zero padding on each side, resolved from `same` / `valid` / explicit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
pub struct Padding {
    /// Rows above the input.
    pub top: usize,
    /// Rows below it.
    pub bottom: usize,
    /// Columns left of it.
    pub left: usize,
    /// Columns right of it.
    pub right: usize,
}

/// The function applied to each output after its sum and bias.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// The sum itself.
    #[default]
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// The activation of `x`. NaN propagates (`relu(NaN)` is NaN, as in
    /// NumPy and PyTorch; `f64::max` would return 0); infinities follow
    /// IEEE: `relu(-inf) = 0`, `relu6(+inf) = 6`.
    pub fn apply(self, x: f64) -> f64 {
        // Comparisons with NaN are false: a NaN falls through to `x`.
        match self {
            Activation::None => x,
            Activation::Relu if x < 0.0 => 0.0,
            Activation::Relu6 if x < 0.0 => 0.0,
            Activation::Relu6 if x > 6.0 => 6.0,
            Activation::Relu | Activation::Relu6 => x,
        }
    }

    /// The option that spells it in a `.conv` file (`None`: no option).
    pub fn keyword(self) -> Option<&'static str> {
        match self {
            Activation::None => None,
            Activation::Relu => Some("relu"),
            Activation::Relu6 => Some("relu6"),
        }
    }
}

/// What a primitive stage computes. Separable forms never appear here:
/// validation expands them into these.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum StageKind {
    /// Full convolution, weights `[Kh][Kw][Ci/G][Co]`: with `groups` G > 1
    /// output channel `co` reads only the input channels of its group
    /// `co / (Co/G)`, `g*Ci/G .. (g+1)*Ci/G`.
    Conv {
        /// Output channels.
        cout: usize,
        /// Channel groups (1: every output reads every input).
        groups: usize,
    },
    /// One filter per channel (times `multiplier`), weights `[Kh][Kw][C][M]`;
    /// output channel `c*M + m`.
    Depthwise {
        /// Outputs per input channel.
        multiplier: usize,
    },
    /// 1x1 convolution, weights `[Ci/G][Co]` (groups as for `Conv`).
    Pointwise {
        /// Output channels.
        cout: usize,
        /// Channel groups.
        groups: usize,
    },
}

/// One primitive stage with everything resolved.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Stage {
    /// The source stage's name, with `.depthwise`/`.pointwise` or
    /// `.col`/`.row` for the parts of a separable one.
    pub name: String,
    /// What it computes.
    pub kind: StageKind,
    /// The shape it reads (the previous stage's output, or the layer's
    /// input).
    pub input: Shape,
    /// The shape it writes.
    pub output: Shape,
    /// `[height, width]`; `[1, 1]` for pointwise.
    pub kernel: [usize; 2],
    /// `[vertical, horizontal]`.
    pub stride: [usize; 2],
    /// `[vertical, horizontal]`: the distance between taps.
    pub dilation: [usize; 2],
    /// Zero padding around the input.
    pub padding: Padding,
    /// Key of the weight array in a weights archive.
    pub weight_key: String,
    /// Key of the bias array, if the stage adds a bias.
    pub bias_key: Option<String>,
    /// Applied after the bias.
    pub activation: Activation,
    /// Adds the layer's input after the activation.
    pub residual: bool,
}

impl Stage {
    /// Multiply-accumulates per image.
    /// Saturating, and groups of 0 read as 1: a hand-built stage (public
    /// fields) gets a number, not a panic, before `check_layer` refuses it.
    pub fn macs(&self) -> u64 {
        let m = |xs: &[usize]| xs.iter().fold(1u64, |a, &x| a.saturating_mul(x as u64));
        let [kh, kw] = self.kernel;
        let (h, w) = (self.output.h, self.output.w);
        match self.kind {
            StageKind::Conv { cout, groups } => {
                m(&[h, w, kh, kw, self.input.c / groups.max(1), cout])
            }
            StageKind::Depthwise { .. } => m(&[h, w, kh, kw, self.output.c]),
            StageKind::Pointwise { cout, groups } => m(&[h, w, self.input.c / groups.max(1), cout]),
        }
    }

    /// The weight array's shape in the contract's (TensorFlow) layout.
    pub fn weight_shape(&self) -> Vec<usize> {
        let [kh, kw] = self.kernel;
        match self.kind {
            StageKind::Conv { cout, groups } => vec![kh, kw, self.input.c / groups.max(1), cout],
            StageKind::Depthwise { multiplier } => vec![kh, kw, self.input.c, multiplier],
            StageKind::Pointwise { cout, groups } => vec![self.input.c / groups.max(1), cout],
        }
    }

    /// Elements of the weight array.
    pub fn weight_len(&self) -> usize {
        self.weight_shape().iter().product()
    }

    /// Channel groups of a conv or pointwise stage (1 for depthwise).
    pub fn groups(&self) -> usize {
        match self.kind {
            StageKind::Conv { groups, .. } | StageKind::Pointwise { groups, .. } => groups,
            StageKind::Depthwise { .. } => 1,
        }
    }

    /// The op as the language spells it: `conv 3x3 -> 64`, `depthwise
    /// 3x3, multiplier 2`, `pointwise 128, groups 4`.
    pub fn describe_op(&self) -> String {
        let [kh, kw] = self.kernel;
        match self.kind {
            StageKind::Conv { cout, groups: 1 } => format!("conv {kh}x{kw} -> {cout}"),
            StageKind::Conv { cout, groups } => {
                format!("conv {kh}x{kw} -> {cout}, groups {groups}")
            }
            StageKind::Depthwise { multiplier: 1 } => format!("depthwise {kh}x{kw}"),
            StageKind::Depthwise { multiplier } => {
                format!("depthwise {kh}x{kw}, multiplier {multiplier}")
            }
            StageKind::Pointwise { cout, groups: 1 } => format!("pointwise {cout}"),
            StageKind::Pointwise { cout, groups } => format!("pointwise {cout}, groups {groups}"),
        }
    }
}

/// A validated layer: the input shape and a chain of primitive stages, each
/// reading the previous one's output.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct Layer {
    /// The name after `layer` in the source.
    pub name: String,
    /// The shape of one input image.
    pub input: Shape,
    /// The stages, in order.
    pub stages: Vec<Stage>,
}

impl Layer {
    /// The shape of one output image (the last stage's).
    pub fn output(&self) -> Shape {
        self.stages.last().map_or(self.input, |s| s.output)
    }

    /// Multiply-accumulates per image, all stages.
    pub fn macs(&self) -> u64 {
        self.stages.iter().map(Stage::macs).sum()
    }

    /// Weight and bias values of all stages (`None`: past a u64).
    pub fn weight_values(&self) -> Option<u64> {
        self.stages.iter().try_fold(0u64, |n, s| {
            let bias = if s.bias_key.is_some() { s.output.c } else { 0 };
            let len = s
                .weight_shape()
                .iter()
                .try_fold(1u64, |a, &x| a.checked_mul(x as u64))?;
            n.checked_add(len)?.checked_add(bias as u64)
        })
    }
}
