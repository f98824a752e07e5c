//! convjit's ONNX importer: the convolution chains of a model as `.conv`
//! layers, with their weights in the contract's layouts.
//!
//! ```text
//! bytes --prost--> ModelProto --fold--> constants --shapes--> tensor dims
//!   --chains--> Conv runs --emit--> .conv text (checked by convjit-ir)
//!   + weights per layer
//! ```
//!
//! - `model.rs`: decoding (types generated from the official `onnx.proto`,
//!   see `proto/README.md`), constants, who consumes what.
//! - `validate.rs`: what makes the graph ONNX (one definition per
//!   tensor), checked before anything reads it.
//! - `fold/`: constant folding (weights computed in the graph become
//!   constants).
//! - `shapes.rs`: tensor shapes from inputs, `value_info` and the ops
//!   around convolutions.
//! - `conv.rs`: one Conv node as a stage (op, geometry, weights).
//! - `chains.rs`: runs of convs with their per-channel scale and shift
//!   (`affine.rs`: BatchNormalization, Mul/Add/Sub/Div by constants),
//!   Relu/Clip and residual Add/Sum; everything else is skipped.
//! - `emit.rs`: the text and the transposed, folded weights.
//!
//! Errors are for models that are not valid ONNX (or not ONNX); valid
//! models with parts convjit cannot express import the rest and say why
//! ([`Import::notes`]).
#![forbid(unsafe_code)]

mod affine;
mod attrs;
mod chains;
mod conv;
mod emit;
mod fold;
mod geometry;
mod model;
mod names;
pub mod proto;
mod shapes;
mod validate;

use bytes::Bytes;
use convjit_npy::{Array, LazyArray};
use std::fmt;

/// What went wrong, as one sentence naming the node or tensor at fault
/// (names [`shown`]: control characters escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    message: String,
}

impl Error {
    /// The message with the names in it made safe to print ([`shown`]).
    pub(crate) fn new(message: impl Into<String>) -> Error {
        Error {
            message: shown(&message.into()),
        }
    }
}

pub use names::shown;

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `[H, W, C]` of the model's 4-D (NCHW) input where its dims are
    /// symbolic (the batch stays free: layers are per image).
    pub input_shape: Option<[usize; 3]>,
}

/// One imported layer.
#[derive(Clone, Debug)]
pub struct Layer {
    /// The validated layer (as `convjit check` would read the text).
    pub layer: convjit_ir::Layer,
    /// Its `.conv` text, with comments naming the ONNX nodes.
    pub text: String,
    /// The ONNX tensor the layer reads (NCHW in the model, NHWC here), as
    /// the model names it: [`shown`] before printing it.
    pub input: String,
    /// The ONNX tensor the layer computes.
    pub output: String,
    /// ONNX nodes computed by the layer.
    pub nodes: usize,
}

/// A model's convolution chains.
pub struct Import {
    /// The decoded model: weights are read from it (sharing the file's
    /// buffer) only when asked for, one layer at a time.
    model: proto::ModelProto,
    /// Constants computed in the graph, which weights may be.
    folded: fold::Folded,
    chains: Vec<chains::Chain>,
    pub layers: Vec<Layer>,
    /// Conv nodes in the model (default domain).
    pub conv_nodes: usize,
    /// Nodes not taken into any layer, counted per op type ([`shown`]) in
    /// order of first appearance (`Constant` nodes, which hold data, and folded
    /// nodes not counted).
    pub skipped: Vec<(String, usize)>,
    /// Nodes evaluated by constant folding (their outputs are constants).
    pub folded_nodes: usize,
    /// Why each Conv node that was not imported was not (names [`shown`]).
    pub notes: Vec<String>,
    /// The kind of each note's reason, for [`Import::note_summary`].
    note_kinds: Vec<&'static str>,
}

/// The largest model file read: 2 GiB, protobuf's own limit (larger
/// models keep their weights in external files, which convjit does not read).
pub const MAX_MODEL_BYTES: u64 = 2 << 30;

/// The bytes of a model file, refused before they fill memory when the
/// file is larger than [`MAX_MODEL_BYTES`] or does not begin as a
/// protobuf message does (`/dev/zero`, an image, text).
pub fn read_model(path: impl AsRef<std::path::Path>) -> Result<Vec<u8>, convjit_npy::Error> {
    convjit_npy::read_limited(path, MAX_MODEL_BYTES, |prefix| {
        protobuf_prefix(prefix)
            .map_err(|why| format!("not an ONNX model (a protobuf message): {why}"))
    })
}

/// Whether `prefix` can begin a protobuf message: each field's key names a
/// field number of at least 1 and a wire type in use (varint, 64-bit,
/// length-delimited, 32-bit), and its value fits the wire type, as far as
/// `prefix` goes. Zeros (field 0) and most random bytes fail within a few
/// fields.
fn protobuf_prefix(prefix: &[u8]) -> Result<(), String> {
    fn varint(b: &[u8], i: &mut usize) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = *b.get(*i)?;
            *i += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        Some(u64::MAX) // over 10 bytes: caught as a bad key or length
    }
    let mut i = 0;
    while i < prefix.len() {
        let at = i;
        let Some(key) = varint(prefix, &mut i) else {
            return Ok(()); // cut by the prefix's end
        };
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 || field > u64::from(u32::MAX >> 3) {
            return Err(format!("byte {at} is not a field key"));
        }
        let skip = match wire {
            0 => match varint(prefix, &mut i) {
                Some(_) => 0,
                None => return Ok(()),
            },
            1 => 8,
            2 => match varint(prefix, &mut i) {
                Some(len) if len <= MAX_MODEL_BYTES => len,
                Some(_) => return Err(format!("field at byte {at} has an impossible length")),
                None => return Ok(()),
            },
            5 => 4,
            _ => return Err(format!("byte {at} is not a field key (wire type {wire})")),
        };
        i = i.saturating_add(usize::try_from(skip).unwrap_or(usize::MAX));
    }
    Ok(())
}

/// Reads a model (the whole file: a `Vec<u8>` or `Bytes`, which the
/// weights then share rather than copy) and finds its convolution chains.
pub fn import(bytes: impl Into<Bytes>, options: &Options) -> Result<Import, Error> {
    let mut model = model::decode(bytes.into())?;
    let Some(graph) = model.graph.as_mut() else {
        return Err(Error::new("not an ONNX model: it has no graph"));
    };
    // Nodes stored out of order (ONNX Runtime runs them) are put in order:
    // the walk below reads each node's inputs' shapes before the node.
    let order = validate::graph(graph)?;
    if order.iter().enumerate().any(|(k, &i)| k != i) {
        let mut nodes: Vec<Option<_>> = std::mem::take(&mut graph.node)
            .into_iter()
            .map(Some)
            .collect();
        graph.node = order.iter().filter_map(|&i| nodes[i].take()).collect();
    }
    let graph = &*graph;
    let nothing_folded = fold::Folded::default();
    let folded = fold::fold(&model::Graph::new(graph, &nothing_folded)?);
    let g = model::Graph::new(graph, &folded)?;
    let input_shape = options
        .input_shape
        .map(|[h, w, c]| [h as u64, w as u64, c as u64]);
    let shapes = shapes::infer(&g, input_shape)?;
    let found = chains::find(&g, &shapes)?;

    let mut layers = Vec::with_capacity(found.chains.len());
    for chain in &found.chains {
        let text = emit::layer_text(chain);
        // The text is what users get: check it as they would.
        let layer = convjit_ir::compile_source(&text)
            .map_err(|d| {
                let first = d.first().map_or(String::new(), |d| d.message.clone());
                // The text on lines of its own (its names are sanitised).
                Error {
                    message: format!(
                        "internal error: the layer made for '{}' does not validate ({}):\n{text}",
                        shown(&chain.output),
                        shown(&first)
                    ),
                }
            })?
            .into_iter()
            .next()
            .ok_or_else(|| Error::new("internal error: a layer's text holds no layer"))?;
        layers.push(Layer {
            layer,
            text,
            input: chain.input.clone(),
            output: chain.output.clone(),
            nodes: chain.stages.iter().map(|s| s.nodes.len()).sum(),
        });
    }
    let mut skipped: Vec<(String, usize)> = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        if found.taken.contains(&i)
            || g.is_folded(i)
            || (node.op_type() == "Constant" && model::is_default_domain(node))
        {
            continue;
        }
        let op = shown(&match node.domain() {
            "" | "ai.onnx" => node.op_type().to_string(),
            d => format!("{d}.{}", node.op_type()),
        });
        match skipped.iter_mut().find(|(o, _)| *o == op) {
            Some((_, n)) => *n += 1,
            None => skipped.push((op, 1)),
        }
    }
    let (chains, conv_nodes, notes) = (found.chains, found.conv_nodes, found.notes);
    let note_kinds = found.kinds;
    let folded_nodes = folded.count();
    Ok(Import {
        model,
        folded,
        folded_nodes,
        chains,
        layers,
        conv_nodes,
        skipped,
        notes,
        note_kinds,
    })
}

impl Import {
    /// The weights of layer `i` in the contract's layouts, keyed
    /// `STAGE.weight` / `STAGE.bias`, for `convjit_npy::write_npz_lazy`:
    /// each array is made from the model's buffer as it is written.
    pub fn weights(&self, i: usize) -> Result<Vec<LazyArray<'_>>, Error> {
        let graph = self
            .model
            .graph
            .as_ref()
            .ok_or_else(|| Error::new("no graph"))?;
        let chain = self
            .chains
            .get(i)
            .ok_or_else(|| Error::new(format!("no layer {i}")))?;
        emit::weights(&model::Graph::new(graph, &self.folded)?, chain)
    }

    /// [`Import::weights`] made whole: `(key, array)` pairs.
    pub fn arrays(&self, i: usize) -> Result<Vec<(String, Array)>, Error> {
        Ok(self
            .weights(i)?
            .into_iter()
            .map(|a| {
                let n = a.shape.iter().product();
                let mut data = vec![0.0; n];
                (a.fill)(0, &mut data);
                (a.key, Array::new(a.shape, data))
            })
            .collect())
    }

    /// The weights of layer `i` bound to its layer (checked like a `.npz`).
    pub fn layer_weights(&self, i: usize) -> Result<convjit_ir::Weights, Error> {
        let layer = &self
            .layers
            .get(i)
            .ok_or_else(|| Error::new(format!("no layer {i}")))?
            .layer;
        let mut arrays: std::collections::HashMap<String, Array> =
            self.arrays(i)?.into_iter().collect();
        let mut take = |key: &str| arrays.remove(key).map(|a| a.data);
        let stages = layer
            .stages
            .iter()
            .map(|s| convjit_ir::StageWeights {
                weight: take(&s.weight_key).unwrap_or_default(),
                bias: s.bias_key.as_deref().and_then(&mut take),
            })
            .collect();
        convjit_ir::Weights::new(layer, stages)
            .map_err(|e| Error::new(format!("internal error: {e}")))
    }

    /// The notes grouped by the kind of their reason, one line per kind
    /// in order of first appearance: its first note, then how many more
    /// Conv nodes were left out for a reason of that kind (`(and 15 more
    /// Conv nodes: weights computed in the graph)`). Equal to
    /// [`Import::notes`] when no two share a kind.
    pub fn note_summary(&self) -> Vec<String> {
        let mut groups: Vec<(&str, &str, usize)> = Vec::new();
        for (note, &kind) in self.notes.iter().zip(&self.note_kinds) {
            match groups.iter_mut().find(|(k, _, _)| *k == kind) {
                Some((_, _, n)) => *n += 1,
                None => groups.push((kind, note, 1)),
            }
        }
        groups
            .into_iter()
            .map(|(kind, note, n)| match n {
                1 => note.to_string(),
                n => format!(
                    "{note} (and {} more Conv node{}: {kind})",
                    n - 1,
                    if n == 2 { "" } else { "s" }
                ),
            })
            .collect()
    }

    /// `skipped: MaxPool x3, Concat x8, Gemm x1`, or `None` when every
    /// node was taken.
    pub fn skipped_line(&self) -> Option<String> {
        if self.skipped.is_empty() {
            return None;
        }
        let parts: Vec<String> = self
            .skipped
            .iter()
            .map(|(op, n)| format!("{op} x{n}"))
            .collect();
        Some(format!("skipped: {}", parts.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::protobuf_prefix;

    #[test]
    fn protobuf_starts_pass_and_other_bytes_fail() {
        // ir_version 8, then a length-delimited field cut by the prefix.
        assert!(protobuf_prefix(&[0x08, 0x08, 0x3a, 0xff, 0x01, 0x0a]).is_ok());
        assert!(protobuf_prefix(&[0u8; 64]).is_err());
        // An empty message is a valid one: the decoder says what it lacks.
        assert!(protobuf_prefix(b"").is_ok());
        assert!(protobuf_prefix(b"layer x { input 1x1x1 }").is_err());
        assert!(protobuf_prefix(&[0x0f, 0x00]).is_err()); // wire type 7
    }
}
