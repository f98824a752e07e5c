//! Constant folding, before anything else reads the graph: every node
//! whose inputs are all constant (initializers, `Constant` nodes, or
//! outputs of nodes folded before it) and whose op the folder knows
//! (`ops.rs`) is evaluated once, and its output becomes a constant like an
//! initializer. Exporters compute weights in the graph (`ConstantOfShape`
//! in the `onnx` wheel's test models, a transposed or reshaped initializer,
//! a BatchNormalization written as `Unsqueeze`, `Sqrt`, `Div`): folded,
//! they are weights again.
//!
//! Nodes are taken in dependency order (a node is ready when its last
//! non-constant input becomes constant), so the work is linear in the
//! graph's size and a cycle, which ONNX forbids, is never ready. What a
//! fold may store is bounded (`tensor::Budget`, one tensor at most
//! `MAX_ELEMS` elements, repeated values stored once), and a node that
//! breaks a rule (shapes that do not broadcast, a bad axis, too large) is
//! left unfolded with the reason, never an error: an unfolded node only
//! matters if a Conv needs it, and then its note says why.

mod ops;
mod tensor;

use crate::model::{is_default_domain, F32s, Graph};
use crate::proto::tensor_proto::DataType;
use std::collections::{HashMap, HashSet, VecDeque};

const FLOAT: i32 = DataType::Float as i32;
const DOUBLE: i32 = DataType::Double as i32;
const INT32: i32 = DataType::Int32 as i32;
const INT64: i32 = DataType::Int64 as i32;
pub use ops::OPS;
pub use tensor::{Data, Tensor, Vals};

/// The graph's folded tensors and the nodes that made them.
#[derive(Default)]
pub struct Folded {
    tensors: HashMap<String, Tensor>,
    nodes: HashSet<usize>,
    /// Why a node whose inputs are all constant was not folded, by its
    /// first output.
    why_not: HashMap<String, String>,
}

impl Folded {
    /// The folded tensor `tensor`, with its name.
    pub fn get_key_value(&self, tensor: &str) -> Option<(&str, &Tensor)> {
        self.tensors
            .get_key_value(tensor)
            .map(|(k, t)| (k.as_str(), t))
    }

    /// Whether node `i` was folded (its output is a constant now).
    pub fn is_folded(&self, i: usize) -> bool {
        self.nodes.contains(&i)
    }

    /// Nodes folded.
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// Why the node making `tensor` was not folded although its inputs
    /// are constant.
    pub fn why_not(&self, tensor: &str) -> Option<&str> {
        self.why_not.get(tensor).map(String::as_str)
    }
}

/// Folds what can be folded in `g` (read without folded tensors).
pub fn fold(g: &Graph) -> Folded {
    let mut folded = Folded::default();
    let n = g.nodes.len();
    // A node is a candidate when it is an op of the default domain that
    // computes something (`Constant` nodes already are constants).
    let candidate = |i: usize| {
        let node = &g.nodes[i];
        is_default_domain(node) && node.op_type() != "Constant" && !node.output.is_empty()
    };
    let mut pending: Vec<usize> = g
        .nodes
        .iter()
        .map(|node| {
            node.input
                .iter()
                .filter(|s| !s.is_empty() && g.constant(s).is_none())
                .count()
        })
        .collect();
    let needed = needed(g, &pending, &candidate);
    let mut ready: VecDeque<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut budget = tensor::Budget::default();
    let mut spare = tensor::Budget::new(SPARE);
    let mut read: HashMap<&str, Tensor> = HashMap::new();
    while let Some(i) = ready.pop_front() {
        if !candidate(i) {
            continue;
        }
        let node = &g.nodes[i];
        let budget = if needed[i] { &mut budget } else { &mut spare };
        let result = node
            .input
            .iter()
            .map(|name| {
                if name.is_empty() {
                    return Ok(None);
                }
                if let Some(t) = folded.tensors.get(name.as_str()) {
                    return Ok(Some(t.clone()));
                }
                if let Some(t) = read.get(name.as_str()) {
                    return Ok(Some(t.clone()));
                }
                let t = read_constant(g, name, budget)?;
                read.insert(name, t.clone());
                Ok(Some(t))
            })
            .collect::<Result<Vec<_>, String>>()
            .and_then(|inputs| ops::eval(node, &inputs, budget));
        let out = node.output[0].as_str();
        match result {
            Ok(t) => {
                if out.is_empty() || g.constant(out).is_some() || folded.tensors.contains_key(out) {
                    continue; // a name made twice (invalid): the first stays
                }
                folded.tensors.insert(out.to_string(), t);
                folded.nodes.insert(i);
                for &c in g.consumers(out) {
                    pending[c] = pending[c].saturating_sub(1);
                    if pending[c] == 0 {
                        ready.push_back(c);
                    }
                }
            }
            Err(why) => {
                folded.why_not.insert(out.to_string(), why);
            }
        }
    }
    folded
}

/// Values stored for constants that nothing the importer reads depends on
/// (a classifier's weights, transposed in the graph): folded only while
/// small, so that they cost neither time nor memory.
const SPARE: usize = 1 << 20;

/// Ops whose constant inputs the importer never reads.
const UNREAD: &[&str] = &["Gemm", "MatMul"];

/// Which nodes the importer may need folded: those that would fold (all
/// inputs constant in the end, found as folding would, assuming each
/// succeeds) whose output leads, through other such nodes, to a node
/// that does not fold and is not one of `UNREAD` (a Conv's weights, a
/// BatchNormalization's parameters, a per-channel `Mul`, a `Reshape`'s
/// shape).
fn needed(g: &Graph, pending: &[usize], candidate: &dyn Fn(usize) -> bool) -> Vec<bool> {
    let n = g.nodes.len();
    let mut pending = pending.to_vec();
    let mut folds = vec![false; n];
    let mut ready: Vec<usize> = (0..n).filter(|&i| pending[i] == 0).collect();
    let mut made = HashSet::new();
    while let Some(i) = ready.pop() {
        let out = g.nodes[i].output.first().map_or("", String::as_str);
        if !candidate(i) || out.is_empty() || g.constant(out).is_some() || !made.insert(out) {
            continue;
        }
        folds[i] = true;
        for &c in g.consumers(out) {
            pending[c] = pending[c].saturating_sub(1);
            if pending[c] == 0 {
                ready.push(c);
            }
        }
    }
    let mut needed = vec![false; n];
    let mut wanted: Vec<&str> = (0..n)
        .filter(|&i| !folds[i] && !UNREAD.contains(&g.nodes[i].op_type()))
        .flat_map(|i| g.nodes[i].input.iter().map(String::as_str))
        .collect();
    while let Some(t) = wanted.pop() {
        if let Some(p) = g.producer(t).filter(|&p| folds[p] && !needed[p]) {
            needed[p] = true;
            wanted.extend(g.nodes[p].input.iter().map(String::as_str));
        }
    }
    needed
}

/// An initializer or `Constant` output as the folder's tensor (a copy,
/// charged to the budget).
fn read_constant(g: &Graph, name: &str, budget: &mut tensor::Budget) -> Result<Tensor, String> {
    let c = g
        .constant(name)
        .ok_or_else(|| format!("internal error: '{name}' is no constant"))?;
    let dims = c.dims().map_err(|e| e.to_string())?;
    let n = tensor::elems(&dims)?;
    let t = c.data_type();
    let data = if t == FLOAT || t == DOUBLE {
        let v = c.f32_view().map_err(|e| e.to_string())?;
        if let F32s::One(x) = v {
            Data::F32(Vals::Fill(x))
        } else {
            let mut out = budget.vec(n)?;
            out.extend((0..v.len()).map(|i| v.get(i)));
            Data::F32(Vals::All(out.into()))
        }
    } else if t == INT64 || t == INT32 {
        budget.charge::<i64>(n)?;
        Data::I64(Vals::All(c.i64s().map_err(|e| e.to_string())?.into()))
    } else {
        return Err(format!(
            "'{name}' is {}, which convjit does not fold",
            crate::model::type_name(t)
        ));
    };
    Ok(Tensor { dims, data })
}
