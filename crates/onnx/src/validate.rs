//! What makes a graph ONNX at all, checked once before anything reads it
//! (the CLI and Python both come through [`crate::import`]): every tensor
//! has one definition (an initializer, a graph input, or one node's
//! output; an initializer may also be listed as a graph input, its
//! default value), and no node depends on itself through the tensors it
//! reads (a cycle). Each is an error ONNX Runtime also refuses to load;
//! afterwards, a name finds one tensor and one producer, and following
//! producers always ends. A Conv's data input, where the model declares
//! its type, is a floating-point tensor of its weights' type.

use crate::model::{describe, is_default_domain, type_name};
use crate::proto::tensor_proto::DataType;
use crate::proto::{type_proto, GraphProto};
use crate::Error;
use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};

/// Where a tensor is defined.
#[derive(Clone, Copy)]
enum Def {
    Initializer,
    Input,
    /// Output of node `i`.
    Node(usize),
}

/// Checks `graph` (see the module's comment); returns its nodes in an
/// order where each comes after the nodes it reads (the file's order
/// where that already is one: ONNX asks for it, ONNX Runtime does not).
pub fn graph(graph: &GraphProto) -> Result<Vec<usize>, Error> {
    let mut defs: HashMap<&str, Def> = HashMap::new();
    for t in &graph.initializer {
        if defs.insert(t.name(), Def::Initializer).is_some() {
            return Err(Error::new(format!(
                "two initializers are named '{}': ONNX requires each tensor name to be defined \
                 once (which one is meant?)",
                t.name()
            )));
        }
    }
    for v in &graph.input {
        match defs.insert(v.name(), Def::Input) {
            None => {}
            // An initializer listed among the inputs: its default value.
            Some(Def::Initializer) => {
                defs.insert(v.name(), Def::Initializer);
            }
            Some(_) => {
                return Err(Error::new(format!(
                    "graph input '{}' is listed twice",
                    v.name()
                )))
            }
        }
    }
    for (i, node) in graph.node.iter().enumerate() {
        for out in node.output.iter().filter(|s| !s.is_empty()) {
            let Some(before) = defs.insert(out, Def::Node(i)) else {
                continue;
            };
            let what = match before {
                Def::Initializer => "an initializer".to_string(),
                Def::Input => "a graph input".to_string(),
                Def::Node(j) if j == i => "the same node (listed twice)".to_string(),
                Def::Node(j) => describe(&graph.node[j]),
            };
            return Err(Error::new(format!(
                "tensor '{}' is written by {} and by {}: ONNX requires each tensor name to be \
                 defined once",
                out,
                what,
                describe(node)
            )));
        }
    }
    let order = acyclic(graph, &defs)?;
    conv_types(graph)?;
    Ok(order)
}

/// A Conv reading a declared tensor of a type Conv does not take (ONNX
/// Runtime: INVALID_GRAPH), or not its weights' type, is refused; one
/// reading DOUBLE or FLOAT16 data with weights of that type is valid,
/// and left out with its weights' note (convjit computes in float32).
fn conv_types(graph: &GraphProto) -> Result<(), Error> {
    let mut types: HashMap<&str, i32> = HashMap::new();
    for v in graph
        .value_info
        .iter()
        .chain(&graph.output)
        .chain(&graph.input)
    {
        let t = v.r#type.as_ref().and_then(|t| t.value.as_ref());
        if let Some(type_proto::Value::TensorType(t)) = t {
            if let Some(e) = t.elem_type.filter(|&e| e != DataType::Undefined as i32) {
                types.insert(v.name(), e);
            }
        }
    }
    let initializers: HashMap<&str, i32> = graph
        .initializer
        .iter()
        .map(|t| (t.name(), t.data_type()))
        .collect();
    let floats = [
        DataType::Float,
        DataType::Float16,
        DataType::Double,
        DataType::Bfloat16,
    ];
    for node in &graph.node {
        if node.op_type() != "Conv" || !is_default_domain(node) {
            continue;
        }
        let Some(x) = node.input.first() else {
            continue;
        };
        let Some(&t) = initializers
            .get(x.as_str())
            .or_else(|| types.get(x.as_str()))
        else {
            continue;
        };
        if !floats.iter().any(|&f| f as i32 == t) {
            return Err(Error::new(format!(
                "{} reads '{x}', which is {}: Conv takes floating-point tensors \
                 (convjit imports float32 models)",
                describe(node),
                type_name(t)
            )));
        }
        let w = node.input.get(1).map_or("", String::as_str);
        if let Some(&wt) = initializers.get(w).filter(|&&wt| wt != t) {
            return Err(Error::new(format!(
                "{} reads '{x}', which is {}, with weights '{w}', which are {}: \
                 Conv's inputs share one type",
                describe(node),
                type_name(t),
                type_name(wt)
            )));
        }
    }
    Ok(())
}

/// Kahn's algorithm: a node is done when every node making its inputs is
/// (the first in the file among those ready next, so a sorted graph keeps
/// its order); nodes never done are on a cycle or after one. From one of
/// them, going back through producers not done must come round: the node
/// met twice is on the cycle. (Subgraphs' reads of outer tensors are not
/// followed.) Returns the order.
fn acyclic(graph: &GraphProto, defs: &HashMap<&str, Def>) -> Result<Vec<usize>, Error> {
    let nodes = &graph.node;
    let producers = |i: usize| {
        nodes[i]
            .input
            .iter()
            .filter_map(|x| match defs.get(x.as_str()) {
                Some(Def::Node(j)) => Some(*j),
                _ => None,
            })
    };
    let mut waiting = vec![0usize; nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); nodes.len()];
    for (i, w) in waiting.iter_mut().enumerate() {
        for j in producers(i) {
            *w += 1;
            users[j].push(i);
        }
    }
    let mut ready: BinaryHeap<Reverse<usize>> = (0..nodes.len())
        .filter(|&i| waiting[i] == 0)
        .map(Reverse)
        .collect();
    let mut done = vec![false; nodes.len()];
    let mut order = Vec::with_capacity(nodes.len());
    while let Some(Reverse(j)) = ready.pop() {
        done[j] = true;
        order.push(j);
        for &i in &users[j] {
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push(Reverse(i));
            }
        }
    }
    let Some(mut at) = done.iter().position(|d| !d) else {
        return Ok(order);
    };
    let mut seen = vec![false; nodes.len()];
    while !seen[at] {
        seen[at] = true;
        // Not done: some input's producer is not done either.
        match producers(at).find(|&j| !done[j]) {
            Some(j) => at = j,
            None => break, // cannot happen; `at` is named all the same
        }
    }
    Err(Error::new(format!(
        "the graph has a cycle through {}: ONNX graphs are acyclic",
        describe(&nodes[at])
    )))
}
