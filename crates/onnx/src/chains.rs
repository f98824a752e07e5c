//! Chains of convolutions: runs of single-consumer Conv nodes, each with
//! the per-channel scale and shift, activation and residual Add that
//! follow it, become one layer; every node not taken into a chain is
//! skipped.
//!
//! A stage computes convolution, bias, activation, then residual (the
//! language's order), so a chain takes, after each Conv and in this order:
//! per-channel steps (`affine.rs`: a `BatchNormalization`, then any
//! `Mul`/`Add`/`Sub`/`Div` by per-channel constants, folded into weights
//! and bias), a `Relu` or a `Clip(0, 6)`, an `Add` (or a two-input `Sum`)
//! of the chain's input; then the next Conv. Each step needs the tensor
//! before it to have that one consumer and not be a graph output (nothing
//! else may need it). ResNet's `Relu` after its Add therefore ends the
//! chain: the language has no activation after residual.

use crate::affine::{batch_norm, channel_step, Fold};
use crate::attrs::Attrs;
use crate::conv::{self, ConvStage, Verdict};
use crate::model::{describe, is_default_domain, Graph};
use crate::names::{identifier, shown, Unique};
use crate::proto::NodeProto;
use crate::shapes::Shapes;
use crate::Error;
use convjit_ir::Activation;
use std::collections::HashSet;

#[derive(Clone, Debug)]
pub struct Stage {
    pub name: String,
    pub conv: ConvStage,
    pub fold: Option<Fold>,
    pub activation: Activation,
    pub residual: bool,
    /// The nodes this stage computes, as `Conv 'name'` for comments.
    pub nodes: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct Chain {
    pub name: String,
    /// The tensor the layer reads and the one it computes.
    pub input: String,
    pub output: String,
    pub stages: Vec<Stage>,
}

pub struct Found {
    pub chains: Vec<Chain>,
    /// Indices of the nodes taken into chains.
    pub taken: HashSet<usize>,
    /// Why each Conv not taken was not.
    pub notes: Vec<String>,
    /// The kind of each note's reason (`conv::Skip::kind`).
    pub kinds: Vec<&'static str>,
    pub conv_nodes: usize,
}

pub fn find(g: &Graph, shapes: &Shapes) -> Result<Found, Error> {
    let mut verdicts = vec![None; g.nodes.len()];
    let (mut notes, mut kinds) = (Vec::new(), Vec::new());
    let mut conv_nodes = 0;
    for (i, node) in g.nodes.iter().enumerate() {
        if node.op_type() == "Conv" && is_default_domain(node) {
            conv_nodes += 1;
            match conv::analyse(g, i, shapes)? {
                Verdict::Take(s) => verdicts[i] = Some(s),
                Verdict::Skip(skip) => {
                    notes.push(shown(&format!(
                        "{} not imported: {}",
                        describe(node),
                        skip.why
                    )));
                    kinds.push(skip.kind);
                }
            }
        }
    }
    let mut taken = HashSet::new();
    let mut layer_names = Unique::default();
    let mut chains = Vec::new();
    for start in 0..g.nodes.len() {
        if verdicts[start].is_none() || taken.contains(&start) {
            continue;
        }
        let mut chain = chain_from(g, start, &verdicts, &mut taken)?;
        chain.name = layer_names.claim(&chain.stages[0].name);
        chains.push(chain);
    }
    Ok(Found {
        chains,
        taken,
        notes,
        kinds,
        conv_nodes,
    })
}

/// The chain starting at Conv node `start`.
fn chain_from(
    g: &Graph,
    start: usize,
    verdicts: &[Option<ConvStage>],
    taken: &mut HashSet<usize>,
) -> Result<Chain, Error> {
    let input = g.nodes[start].input[0].clone();
    let mut stage_names = Unique::default();
    let mut stages = Vec::new();
    let mut at = start;
    while let Some(conv) = verdicts[at].clone() {
        let node = &g.nodes[at];
        taken.insert(at);
        let base = match identifier(node.name(), "Conv") {
            // Unnamed: the how-many-th Conv of the graph it is.
            id if id.is_empty() => {
                let n = g.nodes[..=at]
                    .iter()
                    .filter(|n| n.op_type() == "Conv")
                    .count();
                format!("conv{n}")
            }
            id => id,
        };
        let mut stage = Stage {
            name: stage_names.claim(&base),
            fold: None,
            activation: Activation::None,
            residual: false,
            nodes: vec![label(node)],
            conv,
        };
        let mut tensor = first_output(node);

        if let Some((i, bn)) = sole_consumer(g, tensor, "BatchNormalization") {
            if let Some(fold) = batch_norm(g, bn, stage.conv.cout())? {
                stage.fold = Some(fold);
                stage.nodes.push(label(bn));
                taken.insert(i);
                tensor = first_output(bn);
            }
        }
        while let Some((i, op)) = sole_user(g, tensor) {
            let channels = stage.conv.cout();
            let Some(step) = channel_step(g, op, tensor, channels)? else {
                break;
            };
            stage
                .fold
                .get_or_insert_with(|| Fold::identity(channels))
                .then(&step);
            stage.nodes.push(label(op));
            taken.insert(i);
            tensor = first_output(op);
        }
        if let Some((i, act)) =
            sole_consumer(g, tensor, "Relu").or_else(|| sole_consumer(g, tensor, "Clip"))
        {
            if let Some(a) = activation(g, act)? {
                stage.activation = a;
                stage.nodes.push(label(act));
                taken.insert(i);
                tensor = first_output(act);
            }
        }
        if let Some((i, add)) =
            sole_consumer(g, tensor, "Add").or_else(|| sole_consumer(g, tensor, "Sum"))
        {
            let others: Vec<&str> = add
                .input
                .iter()
                .map(String::as_str)
                .filter(|&s| s != tensor)
                .collect();
            // `residual` adds the layer's input: same shape, no broadcast.
            let layer_input = verdicts[start].as_ref().map(|c| c.input);
            if add.input.len() == 2
                && others == [input.as_str()]
                && layer_input == Some(stage.conv.output)
            {
                stage.residual = true;
                stage.nodes.push(label(add));
                taken.insert(i);
                tensor = first_output(add);
            }
        }
        let tensor = tensor.to_string();
        stages.push(stage);
        match sole_consumer(g, &tensor, "Conv") {
            Some((i, next))
                if verdicts[i].is_some()
                    && !taken.contains(&i)
                    && next.input.first() == Some(&tensor) =>
            {
                at = i
            }
            _ => {
                return Ok(Chain {
                    name: String::new(),
                    input,
                    output: tensor,
                    stages,
                })
            }
        }
    }
    Err(Error::new(format!(
        "internal error: {} was to start a chain but cannot be imported",
        describe(&g.nodes[start])
    )))
}

/// `Conv 'name'` (or the op alone for an unnamed node).
fn label(node: &NodeProto) -> String {
    match node.name() {
        "" => node.op_type().to_string(),
        name => format!("{} '{name}'", node.op_type()),
    }
}

fn first_output(node: &NodeProto) -> &str {
    node.output.first().map_or("", String::as_str)
}

/// The one node consuming `tensor`, if it has exactly one use, is of type
/// `op` (default domain) and reads it as its first input, and `tensor` is
/// not also a graph output.
fn sole_consumer<'g>(g: &'g Graph, tensor: &str, op: &str) -> Option<(usize, &'g NodeProto)> {
    let (i, node) = sole_user(g, tensor)?;
    let reads_first = node.input.first().is_some_and(|x| x == tensor);
    // Add and Sum read the chain's tensor as either input.
    let either = op == "Add" || op == "Sum";
    let ok = node.op_type() == op && is_default_domain(node) && (reads_first || either);
    ok.then_some((i, node))
}

/// The one node using `tensor`, if it has one use and is no graph output.
fn sole_user<'g>(g: &'g Graph, tensor: &str) -> Option<(usize, &'g NodeProto)> {
    let [i] = g.consumers(tensor) else {
        return None;
    };
    (!g.is_output(tensor) && !tensor.is_empty()).then_some((*i, &g.nodes[*i]))
}

/// `Relu`, or a `Clip` to [0, 6] (relu6) or [0, inf) (relu); `None` for
/// other bounds, or bounds computed in the graph.
fn activation(g: &Graph, node: &NodeProto) -> Result<Option<Activation>, Error> {
    if node.op_type() == "Relu" {
        return Ok(Some(Activation::Relu));
    }
    let attrs = Attrs::new(node);
    // Opset 11 moved the bounds from attributes to optional inputs.
    let bound = |i: usize, attr: &str| -> Result<Option<Option<f32>>, Error> {
        if let Some(name) = node.input.get(i).filter(|s| !s.is_empty()) {
            let Some(c) = g.constant(name) else {
                return Ok(None);
            };
            if c.len()? != 1 {
                return Ok(None);
            }
            let v = c.f32s()?;
            return Ok((v.len() == 1).then_some(Some(v[0])));
        }
        Ok(Some(attrs.float(attr)?))
    };
    let (Some(min), Some(max)) = (bound(1, "min")?, bound(2, "max")?) else {
        return Ok(None);
    };
    // The attributes' defaults are -FLT_MAX and FLT_MAX: no bound.
    let max = max.filter(|&m| m < f32::MAX);
    Ok(match (min, max) {
        (Some(0.0), Some(6.0)) => Some(Activation::Relu6),
        (Some(0.0), None) => Some(Activation::Relu),
        _ => None,
    })
}
