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
    for node in g.nodes {
        let outs = if node.op_type() == "Constant" && is_default_domain(node) {
            let c = node.output.first().and_then(|o| g.constant(o));
            vec![c
                .and_then(|c| c.dims().ok())
                .map(|d| d.iter().map(|&x| Some(x as u64)).collect())]
        } else {
            match rule(g, node, &s.known, &s.notes) {
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

/// Output shapes of one node, or why they cannot be known (for an input
/// of unknown shape, why that is: `notes` hold the first cause).
fn rule(
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
    let input = |i: usize| -> Result<&Dims, String> {
        let name = node.input.get(i).map_or("", String::as_str);
        known.get(name).ok_or_else(|| match notes.get(name) {
            Some(cause) => cause.clone(),
            None => format!(
                "the shape of '{name}' (input {i} of {}) is unknown",
                describe(node)
            ),
        })
    };
    let ints_input = |i: usize| -> Result<Option<Vec<i64>>, String> {
        match node.input.get(i).filter(|s| !s.is_empty()) {
            None => Ok(None),
            Some(name) => g
                .constant(name)
                .ok_or_else(|| {
                    format!(
                        "'{name}' (input {i} of {}) is not a constant",
                        describe(node)
                    )
                })?
                .i64s()
                .map(Some)
                .map_err(|e| e.to_string()),
        }
    };
    let attrs = Attrs::new(node);
    let err = |e: Error| e.to_string();
    let one = |d: Dims| Ok(vec![Some(d)]);
    if SAME_SHAPE.contains(&op) {
        return one(input(0)?.clone());
    }
    if BROADCAST.contains(&op) {
        let mut out: Dims = vec![];
        for i in 0..node.input.len() {
            out = broadcast(&out, input(i)?)
                .ok_or_else(|| format!("the inputs of {} do not broadcast", describe(node)))?;
        }
        return one(out);
    }
    match op {
        "Conv" => {
            let x = input(0)?;
            let w = input(1)?;
            let kernel: Option<Vec<u64>> = w.get(2..).and_then(|k| k.iter().copied().collect());
            let (Some(kernel), Some(&Some(m))) = (kernel, w.first()) else {
                return Err(format!(
                    "the weights' shape of {} is unknown",
                    describe(node)
                ));
            };
            let window = Window::parse(node, kernel).map_err(err)?;
            one(windowed(node, x, &window, Some(m), false)?)
        }
        "MaxPool" | "AveragePool" | "LpPool" => {
            let kernel = attrs
                .ints("kernel_shape")
                .map_err(err)?
                .ok_or_else(|| format!("{} has no kernel_shape", describe(node)))?;
            if kernel.iter().any(|&k| k < 1) {
                return Err(format!("{} has a kernel size below 1", describe(node)));
            }
            let window =
                Window::parse(node, kernel.iter().map(|&k| k as u64).collect()).map_err(err)?;
            let ceil = attrs.int("ceil_mode").map_err(err)?.unwrap_or(0) != 0;
            let out = windowed(node, input(0)?, &window, None, ceil)?;
            // MaxPool's optional second output (indices) has the same shape.
            Ok(vec![Some(out.clone()), Some(out)])
        }
        "GlobalAveragePool" | "GlobalMaxPool" | "GlobalLpPool" => {
            let x = input(0)?;
            let mut out = x.clone();
            for d in out.iter_mut().skip(2) {
                *d = Some(1);
            }
            one(out)
        }
        "Concat" => {
            let first = input(0)?;
            let axis = axis_attr(&attrs, "axis", first.len(), None).map_err(err)?;
            let mut out = first.clone();
            for i in 1..node.input.len() {
                let d = input(i)?;
                if d.len() != out.len() {
                    return Err(format!("the inputs of {} differ in rank", describe(node)));
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
        "Flatten" => {
            let x = input(0)?;
            let axis = axis_attr(&attrs, "axis", x.len() + 1, Some(1)).map_err(err)?;
            let product = |d: &[Option<u64>]| d.iter().try_fold(1u64, |p, &x| p.checked_mul(x?));
            one(vec![product(&x[..axis]), product(&x[axis..])])
        }
        "Reshape" => {
            let x = input(0)?;
            let shape =
                ints_input(1)?.ok_or_else(|| format!("{} has no shape input", describe(node)))?;
            let allowzero = attrs.int("allowzero").map_err(err)?.unwrap_or(0) != 0;
            one(reshape(x, &shape, allowzero).ok_or_else(|| {
                format!(
                    "{}: shape {shape:?} does not fit {}",
                    describe(node),
                    show(x)
                )
            })?)
        }
        "Transpose" => {
            let x = input(0)?;
            let perm: Vec<i64> = match attrs.ints("perm").map_err(err)? {
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
                    describe(node),
                    show(x)
                )),
            }
        }
        "Split" => {
            let x = input(0)?;
            let axis = axis_attr(&attrs, "axis", x.len(), Some(0)).map_err(err)?;
            let n = node.output.len() as u64;
            let sizes: Vec<Option<u64>> = match (ints_input(1)?, attrs.ints("split").map_err(err)?)
            {
                (Some(s), _) => s.iter().map(|&v| u64::try_from(v).ok()).collect(),
                (None, Some(s)) => s.iter().map(|&v| u64::try_from(v).ok()).collect(),
                // Equal parts, the last one smaller if need be (opset 18).
                (None, None) => (0..n)
                    .map(|i| {
                        let part = x[axis]?.div_ceil(n.max(1));
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
        "Squeeze" | "Unsqueeze" => {
            let x = input(0)?;
            let axes = match (ints_input(1)?, attrs.ints("axes").map_err(err)?) {
                (Some(a), _) => Some(a),
                (None, a) => a.map(<[i64]>::to_vec),
            };
            if op == "Squeeze" {
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
                    None => {
                        return Err(format!(
                            "{}: which axes it drops is unknown",
                            describe(node)
                        ))
                    }
                })
            } else {
                let axes = axes.ok_or_else(|| format!("{} has no axes", describe(node)))?;
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
        }
        "Pad" => {
            let x = input(0)?;
            if node.input.get(3).is_some_and(|s| !s.is_empty()) {
                return Err(format!(
                    "{}: padding chosen axes is not followed",
                    describe(node)
                ));
            }
            let pads = match ints_input(1)? {
                Some(p) => p,
                None => attrs
                    .ints("pads")
                    .map_err(err)?
                    .ok_or_else(|| format!("{} has no pads", describe(node)))?
                    .to_vec(),
            };
            let r = x.len();
            if pads.len() != 2 * r {
                return Err(format!(
                    "{}: {} pads for rank {r}",
                    describe(node),
                    pads.len()
                ));
            }
            one(x
                .iter()
                .enumerate()
                .map(|(i, d)| {
                    let n = i64::try_from((*d)?)
                        .ok()?
                        .checked_add(pads[i])?
                        .checked_add(pads[r + i])?;
                    u64::try_from(n).ok()
                })
                .collect())
        }
        "Resize" | "Upsample" => {
            let x = input(0)?;
            // Resize: X, roi, scales, sizes (opset 11+); X, scales before.
            let (scales_at, sizes_at) = if op == "Resize" && node.input.len() > 2 {
                (2, 3)
            } else {
                (1, 99)
            };
            if let Some(sizes) = ints_input(sizes_at)? {
                if sizes.len() == x.len() {
                    return one(sizes.iter().map(|&v| u64::try_from(v).ok()).collect());
                }
            }
            let scales = match node.input.get(scales_at).filter(|s| !s.is_empty()) {
                Some(name) => g
                    .constant(name)
                    .ok_or_else(|| format!("the scales of {} are not constant", describe(node)))?
                    .f32s()
                    .map_err(err)?,
                None => attrs
                    .floats("scales")
                    .map_err(err)?
                    .ok_or_else(|| format!("{} has no scales", describe(node)))?
                    .to_vec(),
            };
            if scales.len() != x.len() {
                return Err(format!(
                    "{}: {} scales for rank {}",
                    describe(node),
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
        _ => Err(format!("convjit does not follow shapes through {op}")),
    }
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
fn reshape(x: &Dims, shape: &[i64], allowzero: bool) -> Option<Dims> {
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
