//! One node evaluated on constant inputs: the ops that compute weights and
//! shapes in exported graphs (`ConstantOfShape`, `Reshape`, `Unsqueeze`,
//! `Squeeze`, `Flatten`, `Transpose`, `Cast`, `Identity`, arithmetic with
//! broadcasting, `Sqrt`, `Reciprocal`, `Neg`, `Shape`, `Gather`,
//! `Concat`). A node the folder cannot evaluate is left in the graph, and
//! the reason kept for a note.

use super::tensor::{self, elems, Budget, Data, Tensor, Vals};
use crate::attrs::Attrs;
use crate::model::Constant;
use crate::proto::tensor_proto::DataType;
use crate::proto::NodeProto;

/// The ops [`eval`] takes, for notes.
pub const OPS: &str = "Constant, ConstantOfShape, Identity, Reshape, Unsqueeze, Squeeze, \
                       Flatten, Transpose, Cast, Add, Sub, Mul, Div, Pow, Sqrt, Reciprocal, \
                       Neg, Shape, Gather, Concat";

/// Integer lists (shapes, axes, indices) longer than this are refused.
const MAX_INTS: usize = 1 << 16;

/// The first output of `node`, from its inputs (`None` where absent).
pub fn eval(node: &NodeProto, x: &[Option<Tensor>], budget: &mut Budget) -> Result<Tensor, String> {
    let attrs = Attrs::new(node);
    let input = |i: usize| {
        x.get(i)
            .and_then(Option::as_ref)
            .ok_or_else(|| format!("it lacks input {i}"))
    };
    let op = node.op_type();
    match op {
        "Identity" => Ok(input(0)?.clone()),
        "ConstantOfShape" => constant_of_shape(&attrs, input(0)?),
        "Reshape" => {
            let allowzero = attr_int(&attrs, "allowzero")?.unwrap_or(0) != 0;
            reshape(input(0)?, &ints(input(1)?)?, allowzero)
        }
        "Unsqueeze" | "Squeeze" => {
            let axes = match x.get(1).and_then(Option::as_ref) {
                Some(t) => Some(ints(t)?),
                None => attrs
                    .ints("axes")
                    .map_err(|e| e.to_string())?
                    .map(<[i64]>::to_vec),
            };
            if op == "Unsqueeze" {
                unsqueeze(input(0)?, &axes.ok_or("it has no axes")?)
            } else {
                squeeze(input(0)?, axes.as_deref())
            }
        }
        "Flatten" => {
            let t = input(0)?;
            // Flatten's axis may be the rank itself (-r ..= r).
            let r = t.dims.len() as i64;
            let a = attr_int(&attrs, "axis")?.unwrap_or(1);
            let a = axis(
                if a < 0 { a.saturating_add(r) } else { a },
                t.dims.len() + 1,
            )?;
            let dims = vec![t.dims[..a].iter().product(), t.dims[a..].iter().product()];
            Ok(Tensor { dims, ..t.clone() })
        }
        "Transpose" => transpose(&attrs, input(0)?, budget),
        "Cast" => cast(&attrs, input(0)?, budget),
        "Add" | "Sub" | "Mul" | "Div" | "Pow" => arithmetic(op, input(0)?, input(1)?, budget),
        "Sqrt" | "Reciprocal" | "Neg" => {
            let t = input(0)?;
            let n = elems(&t.dims)?;
            let data = match (&t.data, op) {
                (Data::F32(v), "Sqrt") => Data::F32(tensor::unary(budget, v, n, |x| Ok(x.sqrt()))?),
                (Data::F32(v), "Reciprocal") => {
                    Data::F32(tensor::unary(budget, v, n, |x| Ok(1.0 / x))?)
                }
                (Data::F32(v), _) => Data::F32(tensor::unary(budget, v, n, |x| Ok(-x))?),
                (Data::I64(v), "Neg") => {
                    Data::I64(tensor::unary(budget, v, n, |x| Ok(x.wrapping_neg()))?)
                }
                _ => return Err(format!("{op} of integers is not folded")),
            };
            Ok(Tensor {
                dims: t.dims.clone(),
                data,
            })
        }
        "Shape" => shape(&attrs, input(0)?),
        "Gather" => gather(&attrs, input(0)?, input(1)?, budget),
        "Concat" => {
            let parts: Vec<&Tensor> = x
                .iter()
                .map(|t| t.as_ref().ok_or("an input is absent"))
                .collect::<Result<_, _>>()?;
            concat(&attrs, &parts, budget)
        }
        _ => Err(format!("convjit does not fold {op} nodes (it folds {OPS})")),
    }
}

fn attr_int(attrs: &Attrs, name: &str) -> Result<Option<i64>, String> {
    attrs.int(name).map_err(|e| e.to_string())
}

/// An integer tensor's values (a shape, axes, indices).
fn ints(t: &Tensor) -> Result<Vec<i64>, String> {
    let Data::I64(v) = &t.data else {
        return Err("a shape, axes or indices input holds floats".into());
    };
    let n = elems(&t.dims)?;
    if n > MAX_INTS {
        return Err(format!("an integer list of {n} values is too long"));
    }
    Ok((0..n).map(|i| v.get(i)).collect())
}

/// Axis `a` (negative counts from the end) of `rank` places.
fn axis(a: i64, rank: usize) -> Result<usize, String> {
    let r = rank as i64;
    let at = if a < 0 { a.saturating_add(r) } else { a };
    if (0..r).contains(&at) {
        Ok(at as usize)
    } else {
        Err(format!("axis {a} is out of range for rank {}", rank))
    }
}

fn constant_of_shape(attrs: &Attrs, shape: &Tensor) -> Result<Tensor, String> {
    let dims: Vec<usize> = ints(shape)?
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("its shape has a negative dim {d}")))
        .collect::<Result<_, _>>()?;
    elems(&dims)?;
    let value = attrs.tensor("value").map_err(|e| e.to_string())?;
    let data = match value {
        None => Data::F32(Vals::Fill(0.0)),
        Some(t) => {
            let c = Constant::of_tensor("value", t);
            if c.len().map_err(|e| e.to_string())? != 1 {
                return Err("its value is not one element".into());
            }
            match c.data_type() {
                d if d == DataType::Int64 as i32 || d == DataType::Int32 as i32 => {
                    Data::I64(Vals::Fill(c.i64s().map_err(|e| e.to_string())?[0]))
                }
                _ => Data::F32(Vals::Fill(c.f32_view().map_err(|e| e.to_string())?.get(0))),
            }
        }
    };
    Ok(Tensor { dims, data })
}

fn reshape(t: &Tensor, shape: &[i64], allowzero: bool) -> Result<Tensor, String> {
    let x: Vec<Option<u64>> = t.dims.iter().map(|&d| Some(d as u64)).collect();
    let dims: Option<Vec<usize>> = crate::shapes::reshape(&x, shape, allowzero)
        .and_then(|d| d.into_iter().map(|d| usize::try_from(d?).ok()).collect());
    match dims {
        Some(dims) if elems(&dims)? == elems(&t.dims)? => Ok(Tensor {
            dims,
            data: t.data.clone(),
        }),
        _ => Err(format!("shape {shape:?} does not fit {:?}", t.dims)),
    }
}

fn unsqueeze(t: &Tensor, axes: &[i64]) -> Result<Tensor, String> {
    let rank = t.dims.len() + axes.len();
    let mut at = axes
        .iter()
        .map(|&a| axis(a, rank))
        .collect::<Result<Vec<_>, _>>()?;
    at.sort_unstable();
    at.dedup();
    if at.len() != axes.len() {
        return Err(format!("axes {axes:?} repeat an axis"));
    }
    let mut rest = t.dims.iter();
    let dims = (0..rank)
        .map(|i| match at.binary_search(&i) {
            Ok(_) => 1,
            Err(_) => rest.next().copied().unwrap_or(1),
        })
        .collect();
    Ok(Tensor {
        dims,
        data: t.data.clone(),
    })
}

fn squeeze(t: &Tensor, axes: Option<&[i64]>) -> Result<Tensor, String> {
    let drop: Vec<usize> = match axes {
        Some(a) => a
            .iter()
            .map(|&a| axis(a, t.dims.len()))
            .collect::<Result<_, _>>()?,
        None => (0..t.dims.len()).filter(|&i| t.dims[i] == 1).collect(),
    };
    if drop.iter().any(|&a| t.dims[a] != 1) {
        return Err(format!("it squeezes an axis of {:?} that is not 1", t.dims));
    }
    let dims = (0..t.dims.len())
        .filter(|i| !drop.contains(i))
        .map(|i| t.dims[i])
        .collect();
    Ok(Tensor {
        dims,
        data: t.data.clone(),
    })
}

fn transpose(attrs: &Attrs, t: &Tensor, budget: &mut Budget) -> Result<Tensor, String> {
    let rank = t.dims.len();
    let perm: Vec<usize> = match attrs.ints("perm").map_err(|e| e.to_string())? {
        Some(p) => p
            .iter()
            .map(|&a| usize::try_from(a).ok().filter(|&a| a < rank))
            .collect::<Option<_>>()
            .ok_or_else(|| format!("perm {p:?} is not a permutation of {rank} axes"))?,
        None => (0..rank).rev().collect(),
    };
    let mut seen = perm.clone();
    seen.sort_unstable();
    if seen != (0..rank).collect::<Vec<_>>() {
        return Err(format!("perm {perm:?} is not a permutation of {rank} axes"));
    }
    let data = match &t.data {
        Data::F32(v) => Data::F32(tensor::transpose(budget, v, &t.dims, &perm)?),
        Data::I64(v) => Data::I64(tensor::transpose(budget, v, &t.dims, &perm)?),
    };
    Ok(Tensor {
        dims: perm.iter().map(|&p| t.dims[p]).collect(),
        data,
    })
}

fn cast(attrs: &Attrs, t: &Tensor, budget: &mut Budget) -> Result<Tensor, String> {
    let to = attr_int(attrs, "to")?.ok_or("it has no 'to'")?;
    let n = elems(&t.dims)?;
    let to = i32::try_from(to).unwrap_or(-1);
    let float = [DataType::Float as i32, DataType::Double as i32].contains(&to);
    let int32 = to == DataType::Int32 as i32;
    if !float && !int32 && to != DataType::Int64 as i32 {
        return Err(format!(
            "it casts to {}, which convjit does not fold",
            crate::model::type_name(to)
        ));
    }
    let narrow = |x: i64| if int32 { x as i32 as i64 } else { x };
    let data = match (&t.data, float) {
        (Data::F32(_), true) => t.data.clone(),
        (Data::F32(v), false) => Data::I64(tensor::unary(budget, v, n, |x| Ok(narrow(x as i64)))?),
        (Data::I64(v), true) => Data::F32(tensor::unary(budget, v, n, |x| Ok(x as f32))?),
        (Data::I64(v), false) => Data::I64(tensor::unary(budget, v, n, |x| Ok(narrow(x)))?),
    };
    Ok(Tensor {
        dims: t.dims.clone(),
        data,
    })
}

fn arithmetic(op: &str, a: &Tensor, b: &Tensor, budget: &mut Budget) -> Result<Tensor, String> {
    let dims = tensor::broadcast(&a.dims, &b.dims).ok_or_else(|| {
        format!(
            "its inputs' shapes {:?} and {:?} do not broadcast",
            a.dims, b.dims
        )
    })?;
    let data = match (&a.data, &b.data) {
        (Data::F32(x), Data::F32(y)) => {
            let f = match op {
                "Add" => |x: f32, y: f32| x + y,
                "Sub" => |x, y| x - y,
                "Mul" => |x, y| x * y,
                "Div" => |x, y| x / y,
                _ => f32::powf,
            };
            Data::F32(tensor::binary(
                budget,
                (x, &a.dims),
                (y, &b.dims),
                &dims,
                |x, y| Ok(f(x, y)),
            )?)
        }
        (Data::I64(x), Data::I64(y)) => {
            let f = match op {
                "Add" => |x: i64, y: i64| Some(x.wrapping_add(y)),
                "Sub" => |x: i64, y: i64| Some(x.wrapping_sub(y)),
                "Mul" => |x: i64, y: i64| Some(x.wrapping_mul(y)),
                "Div" => |x: i64, y: i64| x.checked_div(y),
                _ => return Err("Pow of integers is not folded".into()),
            };
            Data::I64(tensor::binary(
                budget,
                (x, &a.dims),
                (y, &b.dims),
                &dims,
                |x, y| f(x, y).ok_or_else(|| "it divides an integer by zero".to_string()),
            )?)
        }
        _ => return Err(format!("it mixes {} and {} inputs", a.kind(), b.kind())),
    };
    Ok(Tensor { dims, data })
}

fn shape(attrs: &Attrs, t: &Tensor) -> Result<Tensor, String> {
    let r = t.dims.len() as i64;
    let clamp = |a: i64| (if a < 0 { a.saturating_add(r) } else { a }).clamp(0, r) as usize;
    let start = clamp(attr_int(attrs, "start")?.unwrap_or(0));
    let end = clamp(attr_int(attrs, "end")?.unwrap_or(r));
    let v: Vec<i64> = t.dims[start..end.max(start)]
        .iter()
        .map(|&d| d as i64)
        .collect();
    Ok(Tensor {
        dims: vec![v.len()],
        data: Data::I64(Vals::All(v.into())),
    })
}

fn gather(
    attrs: &Attrs,
    t: &Tensor,
    index: &Tensor,
    budget: &mut Budget,
) -> Result<Tensor, String> {
    if t.dims.is_empty() {
        return Err("it gathers from a scalar".into());
    }
    let a = axis(attr_int(attrs, "axis")?.unwrap_or(0), t.dims.len())?;
    let len = t.dims[a] as i64;
    let picked: Vec<usize> = ints(index)?
        .iter()
        .map(|&i| {
            let j = if i < 0 { i.saturating_add(len) } else { i };
            usize::try_from(j)
                .ok()
                .filter(|&j| (j as i64) < len)
                .ok_or_else(|| format!("index {i} is out of range for {len}"))
        })
        .collect::<Result<_, _>>()?;
    let mut dims = t.dims[..a].to_vec();
    dims.extend(&index.dims);
    dims.extend(&t.dims[a + 1..]);
    elems(&dims)?;
    let data = match &t.data {
        Data::F32(v) => Data::F32(tensor::gather(budget, v, &t.dims, a, &picked)?),
        Data::I64(v) => Data::I64(tensor::gather(budget, v, &t.dims, a, &picked)?),
    };
    Ok(Tensor { dims, data })
}

fn concat(attrs: &Attrs, parts: &[&Tensor], budget: &mut Budget) -> Result<Tensor, String> {
    let first = parts.first().ok_or("it has no input")?;
    let rank = first.dims.len();
    let a = axis(attr_int(attrs, "axis")?.ok_or("it has no axis")?, rank)?;
    let mut dims = first.dims.clone();
    dims[a] = 0;
    for p in parts {
        let fits = p.dims.len() == rank
            && (0..rank).all(|k| k == a || p.dims[k] == first.dims[k])
            && p.kind() == first.kind();
        if !fits {
            return Err(format!(
                "its inputs {:?} and {:?} do not join along axis {a}",
                first.dims, p.dims
            ));
        }
        dims[a] = dims[a]
            .checked_add(p.dims[a])
            .ok_or("its result is too large")?;
    }
    let n = elems(&dims)?;
    let data = match first.data {
        Data::F32(_) => {
            let v: Vec<_> = parts
                .iter()
                .filter_map(|p| match &p.data {
                    Data::F32(v) => Some((v, p.dims.as_slice())),
                    Data::I64(_) => None,
                })
                .collect();
            Data::F32(tensor::concat(budget, &v, a, n)?)
        }
        Data::I64(_) => {
            let v: Vec<_> = parts
                .iter()
                .filter_map(|p| match &p.data {
                    Data::I64(v) => Some((v, p.dims.as_slice())),
                    Data::F32(_) => None,
                })
                .collect();
            Data::I64(tensor::concat(budget, &v, a, n)?)
        }
    };
    Ok(Tensor { dims, data })
}
