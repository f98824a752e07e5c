//! What makes a graph ONNX at all, checked once before anything reads it
//! (the CLI and Python both come through [`crate::import`]): every tensor
//! has one definition (an initializer, a graph input, or one node's
//! output; an initializer may also be listed as a graph input, its
//! default value). Each is an error ONNX Runtime also refuses to load;
//! afterwards, a name finds one tensor and one producer.

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
    Ok(())
}
