//! Tensor shapes: from the graph's inputs (a symbolic one filled by
//! `--input-shape`), constants and declared `value_info`, carried forward
//! through the ops found around convolutions in CNNs. A shape that cannot
//! be known stays unknown (`None` dims); nothing is guessed.

use crate::attrs::Attrs;
use crate::geometry::Window;
use crate::model::{describe, is_default_domain, Graph};
use crate::proto::{type_proto, NodeProto, ValueInfoProto};
use crate::Error;
use std::collections::HashMap;

/// Dimensions of a tensor, `None` where unknown (e.g. a symbolic batch).
pub type Dims = Vec<Option<u64>>;

/// `[N, 3, 224, 224]`, `?` for an unknown dim.
pub fn show(d: &[Option<u64>]) -> String {
    let parts: Vec<String> = d
        .iter()
        .map(|x| x.map_or("?".to_string(), |v| v.to_string()))
        .collect();
    format!("[{}]", parts.join(", "))
}

pub struct Shapes<'m> {
    known: HashMap<&'m str, Dims>,
    /// Where inference met a declared shape it disagrees with, or an op
    /// it could not follow; said to the user only if a conv needed it.
    pub notes: HashMap<&'m str, String>,
}

impl<'m> Shapes<'m> {
    pub fn get(&self, tensor: &str) -> Option<&Dims> {
        self.known.get(tensor)
    }
}

/// Shapes of every tensor that can be known. `input_shape` is `[H, W, C]`
/// for the model's 4-D (NCHW) input(s) whose dims are not all given.
pub fn infer<'m>(g: &Graph<'m>, input_shape: Option<[u64; 3]>) -> Result<Shapes<'m>, Error> {
    let mut declared: HashMap<&str, Dims> = HashMap::new();
    for v in g
        .proto
        .value_info
        .iter()
        .chain(&g.proto.output)
        .chain(&g.proto.input)
    {
        if let Some(d) = declared_dims(v) {
            declared.insert(v.name(), d);
        }
    }
    let mut s = Shapes {
        known: HashMap::new(),
        notes: HashMap::new(),
    };
    for t in &g.proto.initializer {
        if let Ok(d) = g.constant(t.name()).map_or(Ok(vec![]), |c| c.dims()) {
            s.known
                .insert(t.name(), d.iter().map(|&x| Some(x as u64)).collect());
        }
    }
    fill_inputs(g, &declared, input_shape, &mut s)?;
    for (i, node) in g.nodes.iter().enumerate() {
        let constant = node.op_type() == "Constant" && is_default_domain(node);
        let outs = if constant || g.is_folded(i) {
            let c = node.output.first().and_then(|o| g.constant(o));
            vec![c
                .and_then(|c| c.dims().ok())
                .map(|d| d.iter().map(|&x| Some(x as u64)).collect())]
        } else {
            match output_shapes(g, node, &s.known, &s.notes) {
                Ok(outs) => outs,
                Err(why) => {
                    for o in &node.output {
                        s.notes.insert(o, why.clone());
                    }
                    vec![]
                }
            }
        };
        for (i, out) in node
            .output
            .iter()
            .enumerate()
            .filter(|(_, o)| !o.is_empty())
        {
            let inferred = outs.get(i).cloned().flatten();
            let merged = match (inferred, declared.get(out.as_str())) {
                (Some(a), Some(b)) => Some(merge(a, b, out, &mut s.notes)),
                (a, b) => a.or_else(|| b.cloned()),
            };
            if let Some(d) = merged {
                s.known.insert(out, d);
            }
        }
    }
    Ok(s)
}

/// The dims a `ValueInfoProto` declares, if it declares a tensor shape.
fn declared_dims(v: &ValueInfoProto) -> Option<Dims> {
    use crate::proto::tensor_shape_proto::dimension::Value;
    let Some(type_proto::Value::TensorType(t)) = v.r#type.as_ref()?.value.as_ref() else {
        return None;
    };
    Some(
        t.shape
            .as_ref()?
            .dim
            .iter()
            .map(|d| match d.value {
                Some(Value::DimValue(x)) if x >= 0 => Some(x as u64),
                _ => None,
            })
            .collect(),
    )
}

/// Inferred dims, completed by declared ones; a disagreement keeps the
/// inferred value and is noted.
fn merge<'m>(a: Dims, b: &Dims, name: &'m str, notes: &mut HashMap<&'m str, String>) -> Dims {
    if a.len() != b.len()
        || a.iter()
            .zip(b)
            .any(|(x, y)| matches!((x, y), (Some(x), Some(y)) if x != y))
    {
        notes.insert(
            name,
            format!(
                "its value_info says {} but the ops give {}",
                show(b),
                show(&a)
            ),
        );
        return a;
    }
    a.iter().zip(b).map(|(x, y)| x.or(*y)).collect()
}

/// The graph's inputs (not initializers), with `--input-shape` applied.
fn fill_inputs<'m>(
    g: &Graph<'m>,
    declared: &HashMap<&str, Dims>,
    input_shape: Option<[u64; 3]>,
    s: &mut Shapes<'m>,
) -> Result<(), Error> {
    let inputs: Vec<(&'m str, Option<&Dims>)> = g
        .proto
        .input
        .iter()
        .filter(|v| !g.is_initializer(v.name()))
        .map(|v| (v.name(), declared.get(v.name())))
        .collect();
    for (name, d) in &inputs {
        if let Some(d) = d {
            s.known.insert(name, (*d).clone());
        }
    }
    let Some([h, w, c]) = input_shape else {
        return Ok(());
    };
    let given = [Some(c), Some(h), Some(w)];
    let flag = format!("--input-shape {h}x{w}x{c}");
    let mut fixed = Vec::new();
    let mut applied = 0;
    for (name, d) in inputs {
        let d = match d {
            Some(d) if d.len() == 4 => d.clone(),
            Some(_) => continue,
            // A rank-less input: the flag gives it one.
            None => vec![None; 4],
        };
        let conflict = d[1..]
            .iter()
            .zip(given)
            .any(|(x, y)| x.is_some() && *x != y);
        let complete = d[1..].iter().all(Option::is_some);
        if conflict && !complete {
            return Err(Error::new(format!(
                "{flag} does not fit input '{name}' of shape {} (NCHW)",
                show(&d)
            )));
        }
        if conflict {
            fixed.push(format!("'{name}' {}", show(&d)));
            continue;
        }
        s.known.insert(name, vec![d[0], Some(c), Some(h), Some(w)]);
        applied += 1;
    }
    if applied == 0 {
        return Err(Error::new(if fixed.is_empty() {
            format!("{flag}: the model has no 4-D (NCHW) input")
        } else {
            format!(
                "{flag}: the model's 4-D inputs have other fixed shapes: {} (NCHW)",
                fixed.join(", ")
            )
        }));
    }
    Ok(())
}

/// Ops whose first output has the shape of their first input.
const SAME_SHAPE: &[&str] = &[
    "Abs",
    "BatchNormalization",
    "Cast",
    "Ceil",
    "Celu",
    "Clip",
    "Cos",
    "Dropout",
    "Elu",
    "Erf",
    "Exp",
    "Floor",
    "Gelu",
    "HardSigmoid",
    "HardSwish",
    "Identity",
    "InstanceNormalization",
    "LRN",
    "LayerNormalization",
    "LeakyRelu",
    "Log",
    "LogSoftmax",
    "LpNormalization",
    "MeanVarianceNormalization",
    "Mish",
    "Neg",
    "PRelu",
    "Reciprocal",
    "Relu",
    "Round",
    "Selu",
    "Shrink",
    "Sigmoid",
    "Sign",
    "Sin",
    "Softmax",
    "Softplus",
    "Softsign",
    "Sqrt",
    "Tanh",
    "ThresholdedRelu",
];

/// Ops that broadcast their inputs against each other (NumPy rules).
const BROADCAST: &[&str] = &[
    "Add",
    "And",
    "Div",
    "Equal",
    "Greater",
    "GreaterOrEqual",
    "Less",
    "LessOrEqual",
    "Max",
    "Mean",
    "Min",
    "Mod",
    "Mul",
    "Or",
    "Pow",
    "Sub",
    "Sum",
    "Where",
    "Xor",
];

type Outs = Vec<Option<Dims>>;

/// A node as shape inference sees it: the shapes of its inputs known so
/// far (or why one is not), its constant inputs and its attributes.
struct NodeInputs<'a, 'm> {
    g: &'a Graph<'m>,
    node: &'a NodeProto,
    attrs: Attrs<'a>,
    known: &'a HashMap<&'a str, Dims>,
    notes: &'a HashMap<&'a str, String>,
}

impl<'a> NodeInputs<'a, '_> {
    /// The shape of input `i`; if unknown, why (the first cause noted).
    fn shape(&self, i: usize) -> Result<&'a Dims, String> {
        let name = self.node.input.get(i).map_or("", String::as_str);
        self.known
            .get(name)
            .ok_or_else(|| match self.notes.get(name) {
                Some(cause) => cause.clone(),
                None => format!(
                    "the shape of '{name}' (input {i} of {}) is unknown",
                    describe(self.node)
                ),
            })
    }

    /// Input `i` as constant integers; `None` if the input is absent.
    fn ints(&self, i: usize) -> Result<Option<Vec<i64>>, String> {
        match self.node.input.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => self
                .g
                .constant(name)
                .ok_or_else(|| {
                    format!(
                        "'{name}' (input {i} of {}) is not a constant",
                        describe(self.node)
                    )
                })?
                .i64s()
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    }

    fn describe(&self) -> String {
        describe(self.node)
    }
}

fn err(e: Error) -> String {
    e.to_string()
}

/// A node with one output of shape `d`.
fn one(d: Dims) -> Result<Outs, String> {
    Ok(vec![Some(d)])
}

/// Output shapes of one node, or why they cannot be known (for an input
/// of unknown shape, why that is: `notes` hold the first cause). Elementwise
/// ops are found in `SAME_SHAPE` and `BROADCAST`; the others have a function
/// each (or per family).
fn output_shapes(
    g: &Graph,
    node: &NodeProto,
    known: &HashMap<&str, Dims>,
    notes: &HashMap<&str, String>,
) -> Result<Outs, String> {
    let op = node.op_type();
    if !is_default_domain(node) {
        return Err(format!(
            "{} is in domain '{}', whose ops convjit does not know",
            describe(node),
            node.domain()
        ));
    }
    let n = NodeInputs {
        g,
        node,
        attrs: Attrs::new(node),
        known,
        notes,
    };
    if SAME_SHAPE.contains(&op) {
        return one(n.shape(0)?.clone());
    }
    if BROADCAST.contains(&op) {
        return broadcast_shape(&n);
    }
    match op {
        "Conv" => conv_shape(&n),
        "MaxPool" | "AveragePool" | "LpPool" => pool_shapes(&n),
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => global_pool_shape(&n),
        "Concat" => concat_shape(&n),
        "Flatten" => flatten_shape(&n),
        "Reshape" => reshape_shape(&n),
        "Transpose" => transpose_shape(&n),
        "Split" => split_shapes(&n),
        "Squeeze" => squeeze_shape(&n),
        "Unsqueeze" => unsqueeze_shape(&n),
        "Pad" => pad_shape(&n),
        "Resize" | "Upsample" => resize_shape(&n, op),
        _ => Err(format!("convjit does not follow shapes through {op}")),
    }
}

/// Every input broadcast against the others.
fn broadcast_shape(n: &NodeInputs) -> Result<Outs, String> {
    let mut out: Dims = vec![];
    for i in 0..n.node.input.len() {
        out = broadcast(&out, n.shape(i)?)
            .ok_or_else(|| format!("the inputs of {} do not broadcast", n.describe()))?;
    }
    one(out)
}

/// `Conv`: the weights give the kernel and the output channels.
fn conv_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let w = n.shape(1)?;
    let kernel: Option<Vec<u64>> = w.get(2..).and_then(|k| k.iter().copied().collect());
    let (Some(kernel), Some(&Some(m))) = (kernel, w.first()) else {
        return Err(format!("the weights' shape of {} is unknown", n.describe()));
    };
    let window = Window::parse(n.node, kernel).map_err(err)?;
    one(windowed(n.node, x, &window, Some(m), false)?)
}

/// `MaxPool`, `AveragePool`, `LpPool`: the `kernel_shape` attribute.
fn pool_shapes(n: &NodeInputs) -> Result<Outs, String> {
    let kernel = n
        .attrs
        .ints("kernel_shape")
        .map_err(err)?
        .ok_or_else(|| format!("{} has no kernel_shape", n.describe()))?;
    if kernel.iter().any(|&k| k < 1) {
        return Err(format!("{} has a kernel size below 1", n.describe()));
    }
    let window = Window::parse(n.node, kernel.iter().map(|&k| k as u64).collect()).map_err(err)?;
    let ceil = n.attrs.int("ceil_mode").map_err(err)?.unwrap_or(0) != 0;
    let out = windowed(n.node, n.shape(0)?, &window, None, ceil)?;
    // MaxPool's optional second output (indices) has the same shape.
    Ok(vec![Some(out.clone()), Some(out)])
}

/// `GlobalAveragePool` and kin: every spatial axis becomes 1.
fn global_pool_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let mut out = x.clone();
    for d in out.iter_mut().skip(2) {
        *d = Some(1);
    }
    one(out)
}

/// `Concat`: the sum of the inputs along `axis`.
fn concat_shape(n: &NodeInputs) -> Result<Outs, String> {
    let first = n.shape(0)?;
    let axis = axis_attr(&n.attrs, "axis", first.len(), None).map_err(err)?;
    let mut out = first.clone();
    for i in 1..n.node.input.len() {
        let d = n.shape(i)?;
        if d.len() != out.len() {
            return Err(format!("the inputs of {} differ in rank", n.describe()));
        }
        for (j, (o, x)) in out.iter_mut().zip(d).enumerate() {
            *o = if j == axis {
                o.zip(*x).and_then(|(a, b)| a.checked_add(b))
            } else {
                o.or(*x)
            };
        }
    }
    one(out)
}

/// `Flatten`: the axes before `axis` and those from it, each multiplied.
fn flatten_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let axis = axis_attr(&n.attrs, "axis", x.len() + 1, Some(1)).map_err(err)?;
    let product = |d: &[Option<u64>]| d.iter().try_fold(1u64, |p, &x| p.checked_mul(x?));
    one(vec![product(&x[..axis]), product(&x[axis..])])
}

/// `Reshape` to its constant shape input.
fn reshape_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let shape = n
        .ints(1)?
        .ok_or_else(|| format!("{} has no shape input", n.describe()))?;
    let allowzero = n.attrs.int("allowzero").map_err(err)?.unwrap_or(0) != 0;
    one(reshape(x, &shape, allowzero)
        .ok_or_else(|| format!("{}: shape {shape:?} does not fit {}", n.describe(), show(x)))?)
}

/// `Transpose` by `perm` (by default, the axes reversed).
fn transpose_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let perm: Vec<i64> = match n.attrs.ints("perm").map_err(err)? {
        Some(p) => p.to_vec(),
        None => (0..x.len() as i64).rev().collect(),
    };
    let out: Option<Dims> = perm
        .iter()
        .map(|&p| usize::try_from(p).ok().and_then(|p| x.get(p).copied()))
        .collect();
    match out {
        Some(out) if out.len() == x.len() => one(out),
        _ => Err(format!(
            "{}: perm {perm:?} does not fit {}",
            n.describe(),
            show(x)
        )),
    }
}

/// `Split`: one output per part along `axis`, sized by the `split` input
/// or attribute, else equal parts.
fn split_shapes(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let axis = axis_attr(&n.attrs, "axis", x.len(), Some(0)).map_err(err)?;
    let parts = n.node.output.len() as u64;
    let sizes: Vec<Option<u64>> = match (n.ints(1)?, n.attrs.ints("split").map_err(err)?) {
        (Some(s), _) => s.iter().map(|&v| u64::try_from(v).ok()).collect(),
        (None, Some(s)) => s.iter().map(|&v| u64::try_from(v).ok()).collect(),
        // Equal parts, the last one smaller if need be (opset 18).
        (None, None) => (0..parts)
            .map(|i| {
                let part = x[axis]?.div_ceil(parts.max(1));
                Some(part.min(x[axis]?.saturating_sub(i.saturating_mul(part))))
            })
            .collect(),
    };
    Ok(sizes
        .into_iter()
        .map(|s| {
            let mut d = x.clone();
            d[axis] = s;
            Some(d)
        })
        .collect())
}

/// The axes of `Squeeze` or `Unsqueeze`: an input since opset 13, an
/// attribute before.
fn squeeze_axes(n: &NodeInputs) -> Result<Option<Vec<i64>>, String> {
    Ok(match (n.ints(1)?, n.attrs.ints("axes").map_err(err)?) {
        (Some(a), _) => Some(a),
        (None, a) => a.map(<[i64]>::to_vec),
    })
}

/// `Squeeze`: drops the given axes, or without them every axis of size 1.
fn squeeze_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let axes = squeeze_axes(n)?;
    let rank = x.len() as i64;
    let axes: Option<Vec<usize>> = axes.map(|a| {
        a.iter()
            .map(|&v| (if v < 0 { v.saturating_add(rank) } else { v }) as usize)
            .collect()
    });
    one(match axes {
        Some(a) => x
            .iter()
            .enumerate()
            .filter(|(i, _)| !a.contains(i))
            .map(|(_, d)| *d)
            .collect(),
        None if x.iter().all(Option::is_some) => {
            x.iter().filter(|d| **d != Some(1)).copied().collect()
        }
        None => return Err(format!("{}: which axes it drops is unknown", n.describe())),
    })
}

/// `Unsqueeze`: inserts axes of size 1 at the given places of the output.
fn unsqueeze_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    let axes = squeeze_axes(n)?;
    let axes = axes.ok_or_else(|| format!("{} has no axes", n.describe()))?;
    let rank = (x.len() + axes.len()) as i64;
    let mut at: Vec<i64> = axes
        .iter()
        .map(|&v| if v < 0 { v.saturating_add(rank) } else { v })
        .collect();
    at.sort_unstable();
    let mut rest = x.iter();
    one((0..rank)
        .map(|i| {
            if at.contains(&i) {
                Some(1)
            } else {
                rest.next().copied().flatten()
            }
        })
        .collect())
}

/// `Pad` on every axis (the `pads` input, or attribute before opset 11).
fn pad_shape(n: &NodeInputs) -> Result<Outs, String> {
    let x = n.shape(0)?;
    if n.node.input.get(3).is_some_and(|s| !s.is_empty()) {
        return Err(format!(
            "{}: padding chosen axes is not followed",
            n.describe()
        ));
    }
    let pads = match n.ints(1)? {
        Some(p) => p,
        None => n
            .attrs
            .ints("pads")
            .map_err(err)?
            .ok_or_else(|| format!("{} has no pads", n.describe()))?
            .to_vec(),
    };
    let r = x.len();
    if pads.len() != 2 * r {
        return Err(format!(
            "{}: {} pads for rank {r}",
            n.describe(),
            pads.len()
        ));
    }
    one(x
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let padded = i64::try_from((*d)?)
                .ok()?
                .checked_add(pads[i])?
                .checked_add(pads[r + i])?;
            u64::try_from(padded).ok()
        })
        .collect())
}

/// `Resize` (`op`) or `Upsample`: constant sizes if given, else each axis
/// times its scale, rounded down.
fn resize_shape(n: &NodeInputs, op: &str) -> Result<Outs, String> {
    let x = n.shape(0)?;
    // Resize: X, roi, scales, sizes (opset 11+); X, scales before.
    let (scales_at, sizes_at) = if op == "Resize" && n.node.input.len() > 2 {
        (2, 3)
    } else {
        (1, 99)
    };
    if let Some(sizes) = n.ints(sizes_at)? {
        if sizes.len() == x.len() {
            return one(sizes.iter().map(|&v| u64::try_from(v).ok()).collect());
        }
    }
    let scales = match n.node.input.get(scales_at).filter(|s| !s.is_empty()) {
        Some(name) => {
            n.g.constant(name)
                .ok_or_else(|| format!("the scales of {} are not constant", n.describe()))?
                .f32s()
                .map_err(err)?
        }
        None => n
            .attrs
            .floats("scales")
            .map_err(err)?
            .ok_or_else(|| format!("{} has no scales", n.describe()))?
            .to_vec(),
    };
    if scales.len() != x.len() {
        return Err(format!(
            "{}: {} scales for rank {}",
            n.describe(),
            scales.len(),
            x.len()
        ));
    }
    one(x
        .iter()
        .zip(&scales)
        .map(|(d, &s)| Some(((*d)? as f64 * s as f64).floor() as u64))
        .collect())
}

/// A Conv's or pooling op's output: batch, channels (`channels`, or the
/// input's), then each spatial axis through `window`.
fn windowed(
    node: &NodeProto,
    x: &Dims,
    window: &Window,
    channels: Option<u64>,
    ceil: bool,
) -> Result<Dims, String> {
    if x.len() != window.kernel.len() + 2 {
        return Err(format!(
            "{}: input of rank {} for a window of {} axes",
            describe(node),
            x.len(),
            window.kernel.len()
        ));
    }
    let mut out = vec![x[0], channels.or(x[1])];
    for (i, d) in x[2..].iter().enumerate() {
        out.push(match d {
            Some(len) => Some(
                window
                    .axis(i, *len, ceil)
                    .ok_or_else(|| format!("{}: the output would be empty", describe(node)))?
                    .out,
            ),
            None => None,
        });
    }
    Ok(out)
}

/// An axis attribute (negative counts from the end) in `0..rank`.
fn axis_attr(attrs: &Attrs, name: &str, rank: usize, default: Option<i64>) -> Result<usize, Error> {
    let a = attrs
        .int(name)?
        .or(default)
        .ok_or_else(|| Error::new(format!("no '{name}' attribute")))?;
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    if !(0..r).contains(&a) {
        return Err(Error::new(format!(
            "{name} {a} is out of range for rank {rank}"
        )));
    }
    Ok(a as usize)
}

/// NumPy broadcasting; an unknown dim against 1 stays unknown.
pub fn broadcast(a: &Dims, b: &Dims) -> Option<Dims> {
    let n = a.len().max(b.len());
    let at = |d: &Dims, i: usize| {
        let pad = n - d.len();
        if i < pad {
            Some(1)
        } else {
            d[i - pad]
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (Some(1), y) => Some(y),
            (x, Some(1)) => Some(x),
            (Some(x), Some(y)) => (x == y).then_some(Some(x)),
            (Some(x), None) | (None, Some(x)) => Some(Some(x)),
            (None, None) => Some(None),
        })
        .collect()
}

/// `Reshape`: 0 copies the input's dim (unless `allowzero`), -1 takes
/// what is left.
pub(crate) fn reshape(x: &Dims, shape: &[i64], allowzero: bool) -> Option<Dims> {
    let mut out: Dims = Vec::with_capacity(shape.len());
    let mut infer = None;
    for (i, &s) in shape.iter().enumerate() {
        out.push(match s {
            -1 if infer.is_none() => {
                infer = Some(i);
                None
            }
            0 if !allowzero => *x.get(i)?,
            s => Some(u64::try_from(s).ok()?),
        });
    }
    if let Some(i) = infer {
        let total = x.iter().try_fold(1u64, |p, &d| p.checked_mul(d?));
        let rest = out
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .try_fold(1u64, |p, (_, &d)| p.checked_mul(d?));
        out[i] = match (total, rest) {
            (Some(t), Some(r)) if r > 0 && t % r == 0 => Some(t / r),
            (Some(_), Some(_)) => return None,
            _ => None,
        };
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fmt::Write;

    #[test]
    fn broadcasting_follows_numpy() {
        let d = |v: &[u64]| v.iter().map(|&x| Some(x)).collect::<Dims>();
        assert_eq!(
            broadcast(&d(&[2, 3, 4, 4]), &d(&[3, 1, 1])),
            Some(d(&[2, 3, 4, 4]))
        );
        assert_eq!(broadcast(&d(&[2, 3]), &d(&[4])), None);
        assert_eq!(
            broadcast(&vec![None, Some(3)], &d(&[5, 1])),
            Some(vec![Some(5), Some(3)])
        );
    }

    #[test]
    fn reshape_copies_zeros_and_infers_minus_one() {
        let x: Dims = vec![None, Some(24), Some(8), Some(8)];
        assert_eq!(
            reshape(&x, &[0, 3, 8, 8, 8], false),
            Some(vec![None, Some(3), Some(8), Some(8), Some(8)])
        );
        let y: Dims = vec![Some(2), Some(8), Some(3), Some(8), Some(8)];
        assert_eq!(
            reshape(&y, &[0, -1, 8, 8], false),
            Some(vec![Some(2), Some(24), Some(8), Some(8)])
        );
        // With the batch unknown, -1 is unknown too.
        assert_eq!(reshape(&x, &[-1, 64], false), Some(vec![None, Some(64)]));
        let mut s = String::new();
        let _ = write!(s, "{}", show(&x));
        assert_eq!(s, "[?, 24, 8, 8]");
    }
}
