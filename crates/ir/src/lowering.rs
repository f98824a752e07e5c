//! Syntax tree to layer IR ([`lower`]): every check of meaning, with a
//! diagnostic at the offending span; the options of each stage read and
//! checked against its op; shapes inferred by TensorFlow's rules; and
//! separable convolutions expanded into primitive stages.

use crate::layer::*;
use convjit_lang::ast::{self, Dims, Opt, Separable, Spanned};
use convjit_lang::{quoted, Diagnostic, Diagnostics, Span};
use std::collections::HashMap;

/// Validates every layer of a file. All errors found are returned, sorted
/// by position; a file without errors gives one [`Layer`] per block.
pub fn lower(file: &ast::File) -> Result<Vec<Layer>, Diagnostics> {
    let mut cx = Cx::default();
    let mut layers = Vec::new();
    let mut names: HashMap<&str, Span> = HashMap::new();
    if file.layers.is_empty() {
        cx.error(Span::new(0, 0), "the file defines no layer")
            .with_help("a layer is 'layer NAME { input HxWxC; NAME: OP, options }'");
    }
    for l in &file.layers {
        if names.insert(&l.name.node, l.name.span).is_some() {
            cx.error(
                l.name.span,
                format!("layer {} is defined twice", quoted(&l.name.node)),
            )
            .with_help("layer names must be unique within a file");
        }
        if let Some(layer) = lower_layer(l, &mut cx) {
            layers.push(layer);
        }
    }
    if cx.diags.is_empty() {
        Ok(layers)
    } else {
        Err(cx.diags.finish())
    }
}

/// The diagnostics found so far.
#[derive(Default)]
struct Cx {
    diags: Diagnostics,
}

impl Cx {
    /// Records an error; the returned reference can add a hint.
    fn error(&mut self, span: Span, message: impl Into<String>) -> HelpSlot<'_> {
        self.diags.push(Diagnostic::new(span, message));
        HelpSlot(self.diags.last_mut().map(|d| &mut d.help))
    }

    /// A number in `1..=MAX_DIM`, else an error naming `what`.
    fn size(&mut self, n: &Spanned<u64>, what: &str) -> Option<usize> {
        self.bounded(n, 1, what)
    }

    /// A number in `min..=MAX_DIM`.
    fn bounded(&mut self, n: &Spanned<u64>, min: u64, what: &str) -> Option<usize> {
        if n.node < min {
            self.error(n.span, format!("{what} must be at least {min}"));
            None
        } else if n.node > MAX_DIM {
            self.error(
                n.span,
                format!("{what} {} is too large (limit {MAX_DIM})", n.node),
            );
            None
        } else {
            Some(n.node as usize)
        }
    }

    /// `[h, w]` from `N` or `HxW`.
    fn pair(&mut self, d: &Dims, what: &str) -> Option<[usize; 2]> {
        let v: Vec<Option<usize>> = d.parts.iter().map(|p| self.size(p, what)).collect();
        match v[..] {
            [Some(a)] => Some([a, a]),
            [Some(a), Some(b)] => Some([a, b]),
            _ => None,
        }
    }
}

/// The help of the diagnostic just recorded ([`Cx::error`]).
struct HelpSlot<'a>(Option<&'a mut Option<String>>);

impl HelpSlot<'_> {
    /// Adds a hint to the diagnostic.
    fn with_help(self, help: impl Into<String>) {
        if let Some(slot) = self.0 {
            *slot = Some(help.into());
        }
    }
}

/// One layer block: its input shape, then its stages in order, each
/// lowered from the shape before it; `None` if anything is wrong (every
/// stage's options are still checked once a shape is unknown).
fn lower_layer(l: &ast::Layer, cx: &mut Cx) -> Option<Layer> {
    let Some(input_dims) = l.inputs.first() else {
        cx.error(
            l.name.span,
            format!("layer {} has no input shape", quoted(&l.name.node)),
        )
        .with_help("add 'input HxWxC' as the layer's first line");
        return None;
    };
    for extra in &l.inputs[1..] {
        cx.error(extra.span, "a second 'input' line")
            .with_help("a layer has exactly one input");
    }
    if let Some(first) = l.stages.first() {
        if input_dims.span.start > first.name.span.start {
            cx.error(input_dims.span, "'input' must come before the stages");
        }
    }
    let names = ["input height", "input width", "input channels"];
    let dims: Vec<Option<usize>> = input_dims
        .parts
        .iter()
        .zip(names)
        .map(|(p, what)| cx.size(p, what))
        .collect();
    let input = match dims[..] {
        [Some(h), Some(w), Some(c)] => Some(Shape::new(h, w, c))
            .filter(|&s| check_tensor(cx, input_dims.span, s, "the input").is_some()),
        _ => None,
    };
    if l.stages.is_empty() {
        cx.error(
            l.name.span,
            format!("layer {} has no stages", quoted(&l.name.node)),
        )
        .with_help("add a stage such as 'pw: pointwise 64'");
        return None;
    }

    let mut stages = Vec::new();
    let mut stage_names: HashMap<&str, Span> = HashMap::new();
    // Once the input or a stage fails, later shapes are unknown: their
    // options are still checked, their shapes are not.
    let mut shape = input;
    for s in &l.stages {
        if stage_names.insert(&s.name.node, s.name.span).is_some() {
            cx.error(
                s.name.span,
                format!("stage {} is defined twice", quoted(&s.name.node)),
            )
            .with_help("stage names must be unique within a layer");
        }
        let opts = collect_options(s, cx);
        shape = match (shape, opts, input) {
            (Some(cur), Some(opts), Some(input)) => {
                let lowered = lower_stage(s, &opts, cur, input, cx);
                let out = lowered.as_ref().map(|v: &Vec<Stage>| v[v.len() - 1].output);
                stages.extend(lowered.into_iter().flatten());
                out
            }
            _ => None,
        };
    }
    shape?;
    Some(Layer {
        name: l.name.node.clone(),
        input: input?,
        stages,
    })
}

/// A stage's op sizes and options, checked one by one and against its op.
struct Options {
    /// `[1, 1]` for pointwise.
    kernel: [usize; 2],
    /// Output channels of conv and pointwise (unused by depthwise).
    cout: usize,
    /// `[1, 1]` unless given.
    stride: [usize; 2],
    /// `[1, 1]` unless given.
    dilation: [usize; 2],
    /// `valid` unless given.
    pad: PadSpec,
    /// Outputs per input channel of a depthwise stage (1 unless given).
    multiplier: usize,
    /// `groups G` and where it was written (conv and pointwise).
    groups: Option<Spanned<usize>>,
    /// `separable depthwise` or `separable spatial` (conv only).
    separable: Option<Separable>,
    /// `bias`: the last primitive stage adds one.
    bias: bool,
    /// Applied by the last primitive stage.
    activation: Activation,
    /// `residual` and where it was written.
    residual: Option<Span>,
}

/// Padding as written: resolved per axis once the input shape is known.
#[derive(Clone, Copy)]
enum PadSpec {
    /// TensorFlow's `SAME`: the output has `ceil(input / stride)` pixels.
    Same,
    /// None.
    Valid,
    /// `pad TOP BOTTOM LEFT RIGHT`.
    Explicit(Padding),
}

/// A stage's op sizes and options, each checked ([`read_options`]) and
/// against its op ([`check_fit`]); `None` if any is wrong.
fn collect_options(s: &ast::Stage, cx: &mut Cx) -> Option<Options> {
    let before = cx.diags.total();
    let o = read_options(s, cx);
    check_fit(s, &o, cx);
    (cx.diags.total() == before).then_some(o)
}

/// A stage's op sizes and options as written, each checked on its own
/// (an option given twice is an error, its second value ignored).
fn read_options(s: &ast::Stage, cx: &mut Cx) -> Options {
    let (kernel, cout) = match &s.op.node {
        ast::Op::Conv { kernel, cout } => (
            cx.pair(kernel, "kernel size"),
            cx.size(cout, "output channels"),
        ),
        ast::Op::Depthwise { kernel } => (cx.pair(kernel, "kernel size"), Some(1)),
        ast::Op::Pointwise { cout } => (Some([1, 1]), cx.size(cout, "output channels")),
    };
    let mut o = Options {
        kernel: kernel.unwrap_or([1, 1]),
        cout: cout.unwrap_or(1),
        stride: [1, 1],
        dilation: [1, 1],
        pad: PadSpec::Valid,
        multiplier: 1,
        groups: None,
        separable: None,
        bias: false,
        activation: Activation::None,
        residual: None,
    };
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for opt in &s.options {
        let key = opt.node.keyword();
        if seen.insert(key, opt.span).is_some() {
            let msg = match key {
                "activation" => "a second activation: a stage has at most one".to_string(),
                _ => format!("option '{key}' is given twice"),
            };
            cx.error(opt.span, msg);
            continue;
        }
        read_option(&mut o, opt, cx);
    }
    o
}

/// Sets the option `opt` in `o`, if its value is in range.
fn read_option(o: &mut Options, opt: &Spanned<Opt>, cx: &mut Cx) {
    match &opt.node {
        Opt::Stride(d) => {
            if let Some(v) = cx.pair(d, "stride") {
                o.stride = v;
            }
        }
        Opt::Dilation(d) => {
            if let Some(v) = cx.pair(d, "dilation") {
                o.dilation = v;
            }
        }
        Opt::Pad(ast::Pad::Same) => o.pad = PadSpec::Same,
        Opt::Pad(ast::Pad::Valid) => o.pad = PadSpec::Valid,
        Opt::Pad(ast::Pad::Explicit(sides)) => {
            let v: Vec<Option<usize>> = sides.iter().map(|n| cx.bounded(n, 0, "padding")).collect();
            if let [Some(top), Some(bottom), Some(left), Some(right)] = v[..] {
                o.pad = PadSpec::Explicit(Padding {
                    top,
                    bottom,
                    left,
                    right,
                });
            }
        }
        Opt::Multiplier(m) => {
            if let Some(m) = cx.size(m, "multiplier") {
                o.multiplier = m;
            }
        }
        Opt::Groups(g) => {
            if let Some(n) = cx.size(g, "groups") {
                o.groups = Some(Spanned::new(n, opt.span));
            }
        }
        Opt::Separable(kind) => o.separable = Some(*kind),
        Opt::Bias => o.bias = true,
        Opt::Activation(a) => {
            o.activation = match a {
                ast::Activation::None => Activation::None,
                ast::Activation::Relu => Activation::Relu,
                ast::Activation::Relu6 => Activation::Relu6,
            }
        }
        Opt::Residual => o.residual = Some(opt.span),
    }
}

/// An error for each option of `s` that does not fit its op (read as
/// `o`), with a hint.
fn check_fit(s: &ast::Stage, o: &Options, cx: &mut Cx) {
    let op = &s.op.node;
    for opt in &s.options {
        if let Some(help) = misfit(&opt.node, op, o) {
            cx.error(
                opt.span,
                format!(
                    "option '{}' does not apply to '{}'",
                    opt.node.keyword(),
                    op.keyword()
                ),
            )
            .with_help(help);
        }
    }
}

/// Why option `opt` does not apply to `op` (with the options `o`), if it
/// does not.
fn misfit(opt: &Opt, op: &ast::Op, o: &Options) -> Option<String> {
    match (opt, op) {
        (Opt::Stride(_) | Opt::Dilation(_), ast::Op::Pointwise { .. }) => {
            Some("use 'conv 1x1 -> N' for a strided or dilated 1x1 convolution".to_string())
        }
        (Opt::Pad(ast::Pad::Explicit(_)), ast::Op::Pointwise { .. }) => {
            Some("a pointwise stage reads no neighbours, so it takes no padding".into())
        }
        (Opt::Separable(_), ast::Op::Depthwise { .. } | ast::Op::Pointwise { .. }) => {
            Some("only 'conv' stages can be separable".into())
        }
        (Opt::Groups(_), ast::Op::Depthwise { .. }) => Some(
            "a depthwise stage already has one group per channel; \
             use 'conv KhxKw -> Co, groups G' for a grouped convolution"
                .into(),
        ),
        (Opt::Groups(_), ast::Op::Conv { .. }) if o.separable.is_some() => {
            Some("a separable stage cannot also be grouped".into())
        }
        (Opt::Multiplier(_), ast::Op::Pointwise { .. }) => {
            Some("a multiplier belongs to depthwise stages".into())
        }
        (Opt::Multiplier(_), ast::Op::Conv { .. }) if o.separable != Some(Separable::Depthwise) => {
            Some("a multiplier needs 'depthwise' or 'conv ..., separable depthwise'".into())
        }
        _ => None,
    }
}

/// The primitive stages of one source stage, with shapes inferred from
/// `input`. `layer_input` is what `residual` adds.
fn lower_stage(
    s: &ast::Stage,
    o: &Options,
    input: Shape,
    layer_input: Shape,
    cx: &mut Cx,
) -> Option<Vec<Stage>> {
    let name = &s.name.node;
    let op_span = s.op.span;
    let mut protos = protos(s, o);
    // Bias, activation and residual belong to the last primitive stage.
    let last = protos.last_mut()?;
    last.bias_key = o.bias.then(|| format!("{name}.bias"));
    last.activation = o.activation;
    last.residual = o.residual.is_some();

    if let Some(g) = &o.groups {
        let cout = protos[0].kind_cout();
        if !input.c.is_multiple_of(g.node) || !cout.is_multiple_of(g.node) {
            cx.error(
                g.span,
                format!(
                    "{} groups must divide both the {} input channels and the {cout} output channels",
                    g.node, input.c
                ),
            )
            .with_help("each group reads Ci/G input channels and writes Co/G outputs");
            return None;
        }
    }
    let stages = infer_stages(protos, input, op_span, cx)?;
    let shape = stages[stages.len() - 1].output;
    if let Some(span) = o.residual {
        if shape != layer_input {
            cx.error(
                span,
                format!(
                    "'residual' adds the layer's input ({layer_input}), \
                     but this stage's output is {shape}"
                ),
            )
            .with_help("a residual stage must give back the layer's input shape");
            return None;
        }
    }
    Some(stages)
}

/// The stages of `protos` with their shapes, each from the one before
/// (the first from `input`): `None` where an output would be empty or a
/// tensor or weight array too large (errors at `span`, the op's).
fn infer_stages(protos: Vec<Proto>, input: Shape, span: Span, cx: &mut Cx) -> Option<Vec<Stage>> {
    let mut stages = Vec::with_capacity(protos.len());
    let mut shape = input;
    for p in protos {
        let stage = p.into_stage(shape, cx, span)?;
        check_tensor(cx, span, stage.output, "the stage's output")?;
        let weights = stage
            .weight_shape()
            .iter()
            .map(|&d| d as u64)
            .product::<u64>();
        if weights > MAX_TENSOR_ELEMS {
            cx.error(
                span,
                format!("the weights would have {weights} elements (limit {MAX_TENSOR_ELEMS})"),
            );
            return None;
        }
        shape = stage.output;
        stages.push(stage);
    }
    Some(stages)
}

/// The primitive stages of source stage `s` (options `o`) before their
/// shapes are known: one, or two for a separable conv.
fn protos(s: &ast::Stage, o: &Options) -> Vec<Proto> {
    let name = &s.name.node;
    let base =
        |kind, kernel, stride, dilation| Proto::base(name, o, kind, kernel, stride, dilation);
    match &s.op.node {
        ast::Op::Conv { .. } => {
            let (k, cout, groups) = (o.kernel, o.cout, 1);
            match o.separable {
                None => {
                    let groups = o.groups.as_ref().map_or(1, |g| g.node);
                    let kind = StageKind::Conv { cout, groups };
                    vec![base(kind, k, o.stride, o.dilation)]
                }
                Some(Separable::Depthwise) => {
                    let mut dw = base(
                        StageKind::Depthwise {
                            multiplier: o.multiplier,
                        },
                        k,
                        o.stride,
                        o.dilation,
                    );
                    dw.name = format!("{name}.depthwise");
                    dw.weight_key = format!("{name}.depthwise.weight");
                    let kind = StageKind::Pointwise { cout, groups };
                    let mut pw = base(kind, [1, 1], [1, 1], [1, 1]);
                    pw.name = format!("{name}.pointwise");
                    pw.weight_key = format!("{name}.pointwise.weight");
                    pw.pad = PadSpec::Valid;
                    vec![dw, pw]
                }
                Some(Separable::Spatial) => spatial_protos(name, o),
            }
        }
        ast::Op::Depthwise { .. } => {
            let kind = StageKind::Depthwise {
                multiplier: o.multiplier,
            };
            vec![base(kind, o.kernel, o.stride, o.dilation)]
        }
        ast::Op::Pointwise { .. } => {
            let cout = o.cout;
            let groups = o.groups.as_ref().map_or(1, |g| g.node);
            let mut pw = base(
                StageKind::Pointwise { cout, groups },
                [1, 1],
                [1, 1],
                [1, 1],
            );
            pw.pad = PadSpec::Valid;
            vec![pw]
        }
    }
}

/// A spatially separable conv `name` (options `o`) as a `Khx1` column
/// stage then a `1xKw` row stage: the column stage takes the vertical
/// stride, dilation and padding, the row stage the horizontal ones.
fn spatial_protos(name: &str, o: &Options) -> Vec<Proto> {
    let (k, cout, groups) = (o.kernel, o.cout, 1);
    let (vpad, hpad) = match o.pad {
        PadSpec::Explicit(p) => (
            PadSpec::Explicit(Padding {
                left: 0,
                right: 0,
                ..p
            }),
            PadSpec::Explicit(Padding {
                top: 0,
                bottom: 0,
                ..p
            }),
        ),
        other => (other, other),
    };
    let mut col = Proto::base(
        name,
        o,
        StageKind::Conv { cout, groups },
        [k[0], 1],
        [o.stride[0], 1],
        [o.dilation[0], 1],
    );
    col.name = format!("{name}.col");
    col.weight_key = format!("{name}.col.weight");
    col.pad = vpad;
    let mut row = Proto::base(
        name,
        o,
        StageKind::Conv { cout, groups },
        [1, k[1]],
        [1, o.stride[1]],
        [1, o.dilation[1]],
    );
    row.name = format!("{name}.row");
    row.weight_key = format!("{name}.row.weight");
    row.pad = hpad;
    vec![col, row]
}

/// A primitive stage before its shapes are known.
struct Proto {
    name: String,
    kind: StageKind,
    kernel: [usize; 2],
    stride: [usize; 2],
    dilation: [usize; 2],
    pad: PadSpec,
    weight_key: String,
    bias_key: Option<String>,
    activation: Activation,
    residual: bool,
}

impl Proto {
    /// The primitive stage of source stage `name` (options `o`) of `kind`,
    /// with its padding and weights named after it, and no bias,
    /// activation nor residual.
    fn base(
        name: &str,
        o: &Options,
        kind: StageKind,
        kernel: [usize; 2],
        stride: [usize; 2],
        dilation: [usize; 2],
    ) -> Proto {
        Proto {
            name: name.to_string(),
            kind,
            kernel,
            stride,
            dilation,
            pad: o.pad,
            weight_key: format!("{name}.weight"),
            bias_key: None,
            activation: Activation::None,
            residual: false,
        }
    }

    /// Output channels of a conv or pointwise proto.
    fn kind_cout(&self) -> usize {
        match self.kind {
            StageKind::Conv { cout, .. } | StageKind::Pointwise { cout, .. } => cout,
            StageKind::Depthwise { .. } => 0,
        }
    }

    /// The stage reading `input`: its output shape and padding by
    /// TensorFlow's rules ([`axis`]), or an error at `span` where the
    /// output would be empty.
    fn into_stage(self, input: Shape, cx: &mut Cx, span: Span) -> Option<Stage> {
        let explicit = |p: Padding| ([p.top, p.bottom], [p.left, p.right]);
        let (vpad, hpad) = match self.pad {
            PadSpec::Explicit(p) => {
                let (v, h) = explicit(p);
                (Some(v), Some(h))
            }
            _ => (None, None),
        };
        let same = matches!(self.pad, PadSpec::Same);
        let rows = axis(
            input.h,
            self.kernel[0],
            self.stride[0],
            self.dilation[0],
            same,
            vpad,
        );
        let cols = axis(
            input.w,
            self.kernel[1],
            self.stride[1],
            self.dilation[1],
            same,
            hpad,
        );
        let (Some((oh, top, bottom)), Some((ow, left, right))) = (rows, cols) else {
            let (dim, len, i) = if rows.is_none() {
                ("height", input.h, 0)
            } else {
                ("width", input.w, 1)
            };
            let extent = (self.kernel[i] - 1) * self.dilation[i] + 1;
            cx.error(
                span,
                format!(
                    "the output would be empty: the input {dim} {len} (with padding) is \
                     smaller than the kernel's extent {extent}"
                ),
            )
            .with_help("use 'pad same', a smaller kernel or a smaller dilation");
            return None;
        };
        let cout = match self.kind {
            StageKind::Conv { cout, .. } | StageKind::Pointwise { cout, .. } => cout,
            StageKind::Depthwise { multiplier } => input.c * multiplier,
        };
        Some(Stage {
            name: self.name,
            kind: self.kind,
            input,
            output: Shape::new(oh, ow, cout),
            kernel: self.kernel,
            stride: self.stride,
            dilation: self.dilation,
            padding: Padding {
                top,
                bottom,
                left,
                right,
            },
            weight_key: self.weight_key,
            bias_key: self.bias_key,
            activation: self.activation,
            residual: self.residual,
        })
    }
}

/// Output length and padding (before, after) along one axis, by
/// TensorFlow's rules; `None` if the output would be empty.
fn axis(
    len: usize,
    k: usize,
    stride: usize,
    dilation: usize,
    same: bool,
    explicit: Option<[usize; 2]>,
) -> Option<(usize, usize, usize)> {
    let extent = (k - 1) * dilation + 1;
    if same {
        let out = len.div_ceil(stride);
        let total = ((out - 1) * stride + extent).saturating_sub(len);
        return Some((out, total / 2, total - total / 2));
    }
    let [before, after] = explicit.unwrap_or([0, 0]);
    let padded = len + before + after;
    (padded >= extent).then(|| ((padded - extent) / stride + 1, before, after))
}

/// Whether tensor `s` (named `what` in the error at `span`) has at most
/// [`MAX_TENSOR_ELEMS`] elements per image.
fn check_tensor(cx: &mut Cx, span: Span, s: Shape, what: &str) -> Option<()> {
    let n = s.h as u64 * s.w as u64 * s.c as u64;
    if n > MAX_TENSOR_ELEMS {
        cx.error(
            span,
            format!("{what} ({s}) would have {n} elements per image (limit {MAX_TENSOR_ELEMS})"),
        );
        return None;
    }
    Some(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::{check_layer, compile_source};

    /// The one layer of `src`.
    pub(crate) fn one(src: &str) -> Layer {
        let mut v = compile_source(src).unwrap_or_else(|d| panic!("{d:?}"));
        assert_eq!(v.len(), 1);
        v.remove(0)
    }

    /// The messages of the errors of `src`, in order.
    fn errors(src: &str) -> Vec<String> {
        compile_source(src)
            .expect_err("should fail")
            .into_iter()
            .map(|d| d.message)
            .collect()
    }

    #[test]
    fn textbook_macs() {
        let std = one("layer t { input 12x12x3\n c: conv 5x5 -> 256 }");
        assert_eq!(std.macs(), 1_228_800);
        let sep = one("layer t { input 12x12x3\n c: conv 5x5 -> 256, separable depthwise }");
        let macs: Vec<u64> = sep.stages.iter().map(Stage::macs).collect();
        assert_eq!(macs, [4_800, 49_152]);
        assert_eq!(sep.output(), Shape::new(8, 8, 256));
        assert_eq!(sep.stages[0].weight_key, "c.depthwise.weight");
        assert_eq!(sep.stages[1].bias_key, None);
    }

    #[test]
    fn tensorflow_same_padding_puts_the_extra_pixel_after() {
        // in 9, k 4, s 2: out 5, total pad 3 -> 1 before, 2 after.
        assert_eq!(axis(9, 4, 2, 1, true, None), Some((5, 1, 2)));
        // in 10, k 3, s 2: out 5, total 1 -> 0 before, 1 after.
        assert_eq!(axis(10, 3, 2, 1, true, None), Some((5, 0, 1)));
        // dilation 2 makes a 3-tap kernel span 5.
        assert_eq!(axis(15, 3, 1, 2, true, None), Some((15, 2, 2)));
        assert_eq!(axis(1, 3, 1, 1, true, None), Some((1, 1, 1)));
        assert_eq!(axis(12, 5, 1, 1, false, None), Some((8, 0, 0)));
        assert_eq!(axis(4, 5, 1, 1, false, None), None);
        assert_eq!(axis(23, 7, 3, 1, false, Some([1, 3])), Some((7, 1, 3)));
    }

    #[test]
    fn groups_split_channels_and_must_divide_them() {
        let l = one("layer g { input 8x8x6\n c: conv 3x3 -> 9, groups 3, pad same\n p: pointwise 6, groups 3 }");
        assert_eq!(l.stages[0].kind, StageKind::Conv { cout: 9, groups: 3 });
        assert_eq!(l.stages[0].weight_shape(), [3, 3, 2, 9]);
        assert_eq!(l.stages[1].weight_shape(), [3, 6]);
        assert_eq!(l.stages[0].macs(), 64 * 9 * 2 * 9);
        assert_eq!(l.stages[0].describe_op(), "conv 3x3 -> 9, groups 3");
        check_layer(&l).unwrap();
        assert_eq!(
            errors("layer g { input 4x4x6\n c: conv 3x3 -> 8, groups 3 }"),
            ["3 groups must divide both the 6 input channels and the 8 output channels"]
        );
        assert_eq!(
            errors("layer g { input 4x4x6\n d: depthwise 3x3, groups 2 }"),
            ["option 'groups' does not apply to 'depthwise'"]
        );
        assert_eq!(
            errors("layer g { input 4x4x6\n c: conv 3x3 -> 6, groups 2, separable spatial }"),
            ["option 'groups' does not apply to 'conv'"]
        );
        assert_eq!(
            errors("layer g { input 4x4x6\n c: conv 3x3 -> 6, groups 0 }").len(),
            1
        );
        let mut bad = l.clone();
        bad.stages[1].kind = StageKind::Pointwise { cout: 6, groups: 4 };
        assert!(check_layer(&bad).is_err());
    }

    #[test]
    fn spatial_separable_splits_stride_and_padding_by_axis() {
        let l = one("layer s { input 10x13x6\n s: conv 5x3 -> 8, separable spatial, stride 2x3, pad 1 2 3 4, bias, relu }");
        let [col, row] = &l.stages[..] else { panic!() };
        assert_eq!((col.kernel, col.stride), ([5, 1], [2, 1]));
        assert_eq!((row.kernel, row.stride), ([1, 3], [1, 3]));
        assert_eq!(
            col.padding,
            Padding {
                top: 1,
                bottom: 2,
                left: 0,
                right: 0
            }
        );
        assert_eq!(
            row.padding,
            Padding {
                top: 0,
                bottom: 0,
                left: 3,
                right: 4
            }
        );
        // (10 + 1 + 2 - 5) / 2 + 1 = 5 rows; (13 + 3 + 4 - 3) / 3 + 1 = 6 columns.
        assert_eq!(col.output, Shape::new(5, 13, 8));
        assert_eq!(row.output, Shape::new(5, 6, 8));
        assert_eq!(row.bias_key.as_deref(), Some("s.bias"));
        assert_eq!(
            (col.activation, row.activation),
            (Activation::None, Activation::Relu)
        );
        assert_eq!(row.weight_shape(), [1, 3, 8, 8]);
    }

    #[test]
    fn multiplier_and_residual() {
        let l = one("layer d { input 8x8x4\n d: depthwise 3x3, multiplier 3, pad same\n p: pointwise 4, residual }");
        assert_eq!(l.stages[0].output, Shape::new(8, 8, 12));
        assert_eq!(l.stages[0].weight_shape(), [3, 3, 4, 3]);
        assert!(l.stages[1].residual);
    }

    #[test]
    fn meaning_errors() {
        assert_eq!(
            errors("layer a { input 4x4x0\n p: pointwise 0 }"),
            [
                "input channels must be at least 1",
                "output channels must be at least 1"
            ]
        );
        assert_eq!(
            errors("layer a { input 4x4x2\n p: pointwise 8, stride 2, multiplier 2 }"),
            [
                "option 'stride' does not apply to 'pointwise'",
                "option 'multiplier' does not apply to 'pointwise'"
            ]
        );
        assert_eq!(
            errors("layer a { input 4x4x2\n p: pointwise 8, residual }"),
            ["'residual' adds the layer's input (4x4x2), but this stage's output is 4x4x8"]
        );
        assert_eq!(
            errors("layer a { input 4x4x2\n d: depthwise 5x5 }"),
            ["the output would be empty: the input height 4 (with padding) is smaller than the kernel's extent 5"]
        );
        assert_eq!(
            errors("layer a { input 4x4x2\n p: pointwise 3\n p: pointwise 3 }"),
            ["stage 'p' is defined twice"]
        );
        assert_eq!(
            errors("layer a { input 4x4x2\n p: pointwise 3, relu, relu6, bias, bias }"),
            [
                "a second activation: a stage has at most one",
                "option 'bias' is given twice"
            ]
        );
        assert_eq!(
            errors("layer a { input 65536x65536x65536\n p: pointwise 3 }"),
            ["the input (65536x65536x65536) would have 281474976710656 elements per image (limit 268435456)"]
        );
        assert_eq!(
            errors("layer a { input 4x4x2 }"),
            ["layer 'a' has no stages"]
        );
        assert_eq!(errors(""), ["the file defines no layer"]);
        assert_eq!(
            errors("layer a { input 4x4x2\n p: pointwise 3 }\nlayer a { input 4x4x2\n p: pointwise 3 }"),
            ["layer 'a' is defined twice"]
        );
    }
}
