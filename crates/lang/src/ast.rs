//! The syntax tree: what the text says, with a span for every part a
//! later error may point at. No meaning is checked here.

use crate::span::Span;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Spanned<T> {
    pub node: T,
    pub span: Span,
}

impl<T> Spanned<T> {
    pub fn new(node: T, span: Span) -> Spanned<T> {
        Spanned { node, span }
    }
}

/// `12x12x3`: numbers joined by `x`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dims {
    pub parts: Vec<Spanned<u64>>,
    pub span: Span,
}

impl Dims {
    pub fn values(&self) -> Vec<u64> {
        self.parts.iter().map(|p| p.node).collect()
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct File {
    pub layers: Vec<Layer>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layer {
    pub name: Spanned<String>,
    /// Every `input` line (exactly one is valid; the validator says so).
    pub inputs: Vec<Dims>,
    pub stages: Vec<Stage>,
    /// From `layer` to the closing brace.
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stage {
    pub name: Spanned<String>,
    pub op: Spanned<Op>,
    pub options: Vec<Spanned<Opt>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `conv KhxKw -> Co`
    Conv { kernel: Dims, cout: Spanned<u64> },
    /// `depthwise KhxKw`
    Depthwise { kernel: Dims },
    /// `pointwise Co`
    Pointwise { cout: Spanned<u64> },
}

impl Op {
    pub fn keyword(&self) -> &'static str {
        match self {
            Op::Conv { .. } => "conv",
            Op::Depthwise { .. } => "depthwise",
            Op::Pointwise { .. } => "pointwise",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Opt {
    /// `stride S` or `stride SHxSW`
    Stride(Dims),
    /// `dilation D` or `dilation DHxDW`
    Dilation(Dims),
    Pad(Pad),
    Multiplier(Spanned<u64>),
    /// `groups G`: grouped convolution (conv and pointwise).
    Groups(Spanned<u64>),
    Separable(Separable),
    Bias,
    Activation(Activation),
    Residual,
}

impl Opt {
    pub fn keyword(&self) -> &'static str {
        match self {
            Opt::Stride(_) => "stride",
            Opt::Dilation(_) => "dilation",
            Opt::Pad(_) => "pad",
            Opt::Multiplier(_) => "multiplier",
            Opt::Groups(_) => "groups",
            Opt::Separable(_) => "separable",
            Opt::Bias => "bias",
            Opt::Activation(_) => "activation",
            Opt::Residual => "residual",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Pad {
    Same,
    Valid,
    /// `pad T B L R`
    Explicit([Spanned<u64>; 4]),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Separable {
    /// Keras `SeparableConv2D`: depthwise then pointwise.
    Depthwise,
    /// `Khx1` then `1xKw`.
    Spatial,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Activation {
    #[default]
    None,
    Relu,
    Relu6,
}
