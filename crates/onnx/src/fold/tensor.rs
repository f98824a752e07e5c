//! The folder's values: a tensor's dims and its numbers, either all of
//! them or one repeated (a `ConstantOfShape`, which costs nothing however
//! large it says it is), and the index arithmetic of broadcasting,
//! transposing, gathering and concatenating them. Every size is counted
//! with checked arithmetic and charged to a [`Budget`] before memory is
//! taken.

use std::sync::Arc;

/// The most elements one folded tensor may have, stored or repeated:
/// convjit's limit on a tensor (a layer's weights cannot be larger).
pub const MAX_ELEMS: usize = convjit_ir::MAX_TENSOR_ELEMS as usize;

/// The numbers of a tensor: all of them (shared, so `Reshape` and kin
/// copy nothing), or one value for every element.
#[derive(Clone, Debug)]
pub enum Vals<T> {
    All(Arc<[T]>),
    Fill(T),
}

impl<T: Copy> Vals<T> {
    /// Element `i` (`i` below the tensor's element count).
    #[inline]
    pub fn get(&self, i: usize) -> T {
        match self {
            Vals::All(v) => v[i],
            Vals::Fill(x) => *x,
        }
    }
}

/// Numbers of one of the two kinds the folder computes with: float32
/// (FLOAT; DOUBLE is read rounded, as convjit computes in float32) and
/// 64-bit integers (INT64, INT32: shapes, axes, indices).
#[derive(Clone, Debug)]
pub enum Data {
    F32(Vals<f32>),
    I64(Vals<i64>),
}

#[derive(Clone, Debug)]
pub struct Tensor {
    pub dims: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    pub fn kind(&self) -> &'static str {
        match self.data {
            Data::F32(_) => "float",
            Data::I64(_) => "integer",
        }
    }
}

/// The element count of `dims`, refused past [`MAX_ELEMS`] (or overflow).
pub fn elems(dims: &[usize]) -> Result<usize, String> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .filter(|&n| n <= MAX_ELEMS)
        .ok_or_else(|| {
            format!(
                "its result {dims:?} would have more than {MAX_ELEMS} elements (convjit's limit)"
            )
        })
}

/// The most values folding stores in all (256 MiB of float32): a model's
/// weights computed from stored values (a transposed initializer, a
/// repeated value times a per-channel one). Repeated values are free, so
/// a few bytes of `ConstantOfShape` cannot take more than this.
pub const MAX_STORED: usize = 1 << 26;

/// What folding may allocate in all: [`MAX_STORED`] values, and never
/// more than the process can still take (`convjit_ir::budget`).
pub struct Budget {
    left: usize,
    limit: usize,
}

impl Default for Budget {
    fn default() -> Budget {
        Budget::new(MAX_STORED)
    }
}

impl Budget {
    /// A budget of `values` (at most [`MAX_STORED`]).
    pub fn new(values: usize) -> Budget {
        let limit = values.min(MAX_STORED);
        Budget { left: limit, limit }
    }

    /// A vector for `n` values of `T`, charged to the budget first.
    pub fn vec<T>(&mut self, n: usize) -> Result<Vec<T>, String> {
        self.charge::<T>(n)?;
        let mut v = Vec::new();
        v.try_reserve_exact(n)
            .map_err(|_| format!("cannot allocate {n} values"))?;
        Ok(v)
    }

    /// Charges `n` values of `T` to the budget.
    pub fn charge<T>(&mut self, n: usize) -> Result<(), String> {
        if n > self.left {
            return Err(format!(
                "folding would store more than {} values in all (convjit's limit)",
                self.limit
            ));
        }
        let bytes = (n as u64).checked_mul(std::mem::size_of::<T>() as u64);
        convjit_ir::budget::check("folding a constant", bytes).map_err(|e| e.to_string())?;
        self.left -= n;
        Ok(())
    }
}

/// Row-major strides of `dims`.
fn strides(dims: &[usize]) -> Vec<usize> {
    let mut s = vec![1; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        s[i] = s[i + 1] * dims[i + 1];
    }
    s
}

/// NumPy broadcasting of two shapes, `None` when they do not broadcast.
pub fn broadcast(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let n = a.len().max(b.len());
    let at = |d: &[usize], i: usize| {
        if i < n - d.len() {
            1
        } else {
            d[i + d.len() - n]
        }
    };
    (0..n)
        .map(|i| match (at(a, i), at(b, i)) {
            (1, y) => Some(y),
            (x, 1) => Some(x),
            (x, y) => (x == y).then_some(x),
        })
        .collect()
}

/// Strides of `dims` read as `out` (right-aligned; 0 where broadcast).
fn broadcast_strides(dims: &[usize], out: &[usize]) -> Vec<usize> {
    let s = strides(dims);
    let pad = out.len() - dims.len();
    (0..out.len())
        .map(|i| {
            if i < pad || dims[i - pad] == 1 {
                0
            } else {
                s[i - pad]
            }
        })
        .collect()
}

/// `f` applied elementwise to `a` and `b` broadcast to `out` (of `n`
/// elements): one value when both are one value.
pub fn binary<T: Copy>(
    budget: &mut Budget,
    (a, ad): (&Vals<T>, &[usize]),
    (b, bd): (&Vals<T>, &[usize]),
    out: &[usize],
    f: impl Fn(T, T) -> Result<T, String>,
) -> Result<Vals<T>, String> {
    if let (Vals::Fill(x), Vals::Fill(y)) = (a, b) {
        return Ok(Vals::Fill(f(*x, *y)?));
    }
    let n = elems(out)?;
    let (sa, sb) = (broadcast_strides(ad, out), broadcast_strides(bd, out));
    let mut v = budget.vec(n)?;
    // An odometer over the output's coordinates, carrying both offsets.
    let (mut at, mut ia, mut ib) = (vec![0; out.len()], 0, 0);
    for _ in 0..n {
        v.push(f(a.get(ia), b.get(ib))?);
        for k in (0..out.len()).rev() {
            at[k] += 1;
            ia += sa[k];
            ib += sb[k];
            if at[k] < out[k] {
                break;
            }
            at[k] = 0;
            ia -= sa[k] * out[k];
            ib -= sb[k] * out[k];
        }
    }
    Ok(Vals::All(v.into()))
}

/// `f` applied to every element.
pub fn unary<T: Copy, U>(
    budget: &mut Budget,
    a: &Vals<T>,
    n: usize,
    f: impl Fn(T) -> Result<U, String>,
) -> Result<Vals<U>, String> {
    Ok(match a {
        Vals::Fill(x) => Vals::Fill(f(*x)?),
        Vals::All(v) => {
            let mut out = budget.vec(n)?;
            for &x in v.iter() {
                out.push(f(x)?);
            }
            Vals::All(out.into())
        }
    })
}

/// `a` (of `dims`) with its axes in the order `perm` (checked to be a
/// permutation by the caller).
pub fn transpose<T: Copy>(
    budget: &mut Budget,
    a: &Vals<T>,
    dims: &[usize],
    perm: &[usize],
) -> Result<Vals<T>, String> {
    let Vals::All(v) = a else {
        return Ok(a.clone());
    };
    let out: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
    let (si, so) = (strides(dims), strides(&out));
    let mut r = budget.vec(v.len())?;
    for i in 0..v.len() {
        let (mut at, mut rest) = (0, i);
        for k in 0..out.len() {
            at += rest / so[k] * si[perm[k]];
            rest %= so[k];
        }
        r.push(v[at]);
    }
    Ok(Vals::All(r.into()))
}

/// `a`'s slices along `axis` picked by `index` (checked in range).
pub fn gather<T: Copy>(
    budget: &mut Budget,
    a: &Vals<T>,
    dims: &[usize],
    axis: usize,
    index: &[usize],
) -> Result<Vals<T>, String> {
    if let Vals::Fill(_) = a {
        return Ok(a.clone());
    }
    let outer: usize = dims[..axis].iter().product();
    let inner: usize = dims[axis + 1..].iter().product();
    let n = outer
        .checked_mul(index.len())
        .and_then(|n| n.checked_mul(inner))
        .filter(|&n| n <= MAX_ELEMS)
        .ok_or("its result would be too large")?;
    let mut r = budget.vec(n)?;
    for o in 0..outer {
        for &j in index {
            let start = (o * dims[axis] + j) * inner;
            r.extend((start..start + inner).map(|k| a.get(k)));
        }
    }
    Ok(Vals::All(r.into()))
}

/// Tensors (same rank, same dims but along `axis`) joined along `axis`.
pub fn concat<T: Copy>(
    budget: &mut Budget,
    parts: &[(&Vals<T>, &[usize])],
    axis: usize,
    n: usize,
) -> Result<Vals<T>, String> {
    let Some(&(_, first)) = parts.first() else {
        return Err("it has no input".into());
    };
    let outer: usize = first[..axis].iter().product();
    let mut r = budget.vec(n)?;
    for o in 0..outer {
        for (v, d) in parts {
            let chunk: usize = d[axis..].iter().product();
            r.extend((o * chunk..(o + 1) * chunk).map(|k| v.get(k)));
        }
    }
    Ok(Vals::All(r.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all<T: Copy>(v: &Vals<T>, n: usize) -> Vec<T> {
        (0..n).map(|i| v.get(i)).collect()
    }

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast(&[2, 3, 1], &[3, 4]), Some(vec![2, 3, 4]));
        assert_eq!(broadcast(&[2, 3], &[4]), None);
        assert_eq!(broadcast(&[], &[5]), Some(vec![5]));
        let mut b = Budget::default();
        let a = Vals::All(vec![1.0f32, 2.0, 3.0].into());
        let c = Vals::All(vec![10.0f32, 20.0].into());
        let r = binary(&mut b, (&a, &[3, 1]), (&c, &[2]), &[3, 2], |x, y| Ok(x + y)).unwrap();
        assert_eq!(all(&r, 6), [11.0, 21.0, 12.0, 22.0, 13.0, 23.0]);
    }

    #[test]
    fn transpose_gather_concat_move_elements() {
        let mut b = Budget::default();
        let a = Vals::All((0..6i64).collect::<Vec<_>>().into());
        let t = transpose(&mut b, &a, &[2, 3], &[1, 0]).unwrap();
        assert_eq!(all(&t, 6), [0, 3, 1, 4, 2, 5]);
        let g = gather(&mut b, &a, &[2, 3], 1, &[2, 0]).unwrap();
        assert_eq!(all(&g, 4), [2, 0, 5, 3]);
        let two: &[usize] = &[2, 1];
        let c = concat(&mut b, &[(&a, &[2, 3]), (&Vals::Fill(9), two)], 1, 8).unwrap();
        assert_eq!(all(&c, 8), [0, 1, 2, 9, 3, 4, 5, 9]);
    }

    #[test]
    fn sizes_are_bounded_before_allocating() {
        assert!(elems(&[usize::MAX, 2]).is_err());
        assert!(elems(&[1 << 20, 1 << 20]).is_err());
        assert_eq!(elems(&[]), Ok(1));
        let mut b = Budget::new(10);
        assert!(b.vec::<f32>(11).is_err());
        assert!(b.vec::<f32>(10).is_ok());
        assert!(b.vec::<f32>(1).is_err());
    }
}
