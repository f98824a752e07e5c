//! What makes a graph ONNX at all, checked once before anything reads it
//! (the CLI and Python both come through [`crate::import`]): every tensor
//! has one definition (an initializer, a graph input, or one node's
//! output; an initializer may also be listed as a graph input, its
//! default value), and no node depends on itself through the tensors it
//! reads (a cycle). Each is an error ONNX Runtime also refuses to load;
//! afterwards, a name finds one tensor and one producer, and following
//! producers always ends.

use crate::model::describe;
use crate::proto::GraphProto;
use crate::Error;
use std::collections::HashMap;

/// Where a tensor is defined.
#[derive(Clone, Copy)]
enum Def {
    Initializer,
    Input,
    /// Output of node `i`.
    Node(usize),
}

/// Checks `graph` (see the module's comment).
pub fn graph(graph: &GraphProto) -> Result<(), Error> {
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
    acyclic(graph, &defs)
}

/// Kahn's algorithm: a node is done when every node making its inputs is;
/// nodes never done are on a cycle or after one. From one of them, going
/// back through producers not done must come round: the node met twice
/// is on the cycle. (Subgraphs' reads of outer tensors are not followed.)
fn acyclic(graph: &GraphProto, defs: &HashMap<&str, Def>) -> Result<(), Error> {
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
    let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| waiting[i] == 0).collect();
    let mut done = vec![false; nodes.len()];
    while let Some(j) = ready.pop() {
        done[j] = true;
        for &i in &users[j] {
            waiting[i] -= 1;
            if waiting[i] == 0 {
                ready.push(i);
            }
        }
    }
    let Some(mut at) = done.iter().position(|d| !d) else {
        return Ok(());
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
