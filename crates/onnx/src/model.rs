//! The decoded model: its graph's nodes, who consumes each tensor, and
//! constant tensors (initializers, `Constant` nodes and what the folder
//! computed from them) read as numbers.

use crate::fold::{Data, Folded, Tensor, Vals};
use crate::proto::{tensor_proto, GraphProto, ModelProto, NodeProto, TensorProto};
use crate::{attrs::Attrs, Error};
use bytes::Bytes;
use prost::Message;
use std::collections::{HashMap, HashSet};

/// Decodes a model. `bytes` should be the whole file: byte fields
/// (initializers' `raw_data`) then share its buffer instead of copying it.
pub fn decode(bytes: Bytes) -> Result<ModelProto, Error> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        Error::new(format!(
            "not a valid ONNX model (truncated, or not ONNX at all): {e}"
        ))
    })?;
    // Protobuf decodes many byte strings without complaint (unknown fields
    // are skipped): what every ONNX model has tells the rest apart.
    let missing = [
        (model.ir_version.is_none(), "ir_version"),
        (model.graph.is_none(), "graph"),
        (model.opset_import.is_empty(), "opset_import"),
    ];
    if let Some((_, what)) = missing.iter().find(|(absent, _)| *absent) {
        return Err(Error::new(format!(
            "not an ONNX model: it has no {what} (truncated, or not ONNX at all)"
        )));
    }
    Ok(model)
}

/// The graph with its tensors indexed by name.
pub struct Graph<'m> {
    pub proto: &'m GraphProto,
    pub nodes: &'m [NodeProto],
    initializers: HashMap<&'m str, &'m TensorProto>,
    /// Outputs of `Constant` nodes.
    constants: HashMap<&'m str, Constant<'m>>,
    /// Tensors computed by constant folding.
    folded: &'m Folded,
    /// The node making each tensor (one: `validate.rs`).
    producers: HashMap<&'m str, usize>,
    /// For each tensor, the node of each use (a node using a tensor twice
    /// appears twice).
    consumers: HashMap<&'m str, Vec<usize>>,
    outputs: HashSet<&'m str>,
}

/// A constant tensor: its dims and where its values are.
#[derive(Clone, Copy)]
pub struct Constant<'m> {
    pub name: &'m str,
    source: Source<'m>,
}

#[derive(Clone, Copy)]
enum Source<'m> {
    Proto(&'m TensorProto),
    /// A `Constant` node's `value_float(s)`: a scalar when `scalar`.
    Floats(&'m [f32], bool),
    Ints(&'m [i64], bool),
    Float(f32),
    Int(i64),
    /// A `Constant` node holding strings or a sparse tensor.
    Other,
    /// Computed by the folder.
    Folded(&'m Tensor),
}

impl<'m> Graph<'m> {
    /// The graph, with the tensors `folded` computed as constants
    /// (`Folded::default()` for none).
    pub fn new(proto: &'m GraphProto, folded: &'m Folded) -> Result<Graph<'m>, Error> {
        let mut g = Graph {
            proto,
            nodes: &proto.node,
            initializers: HashMap::new(),
            constants: HashMap::new(),
            folded,
            producers: HashMap::new(),
            consumers: HashMap::new(),
            outputs: proto.output.iter().map(|v| v.name()).collect(),
        };
        for t in &proto.initializer {
            g.initializers.insert(t.name(), t);
        }
        for (i, node) in proto.node.iter().enumerate() {
            for input in node.input.iter().filter(|s| !s.is_empty()) {
                g.consumers.entry(input).or_default().push(i);
            }
            for out in node.output.iter().filter(|s| !s.is_empty()) {
                g.producers.entry(out).or_insert(i);
            }
            if node.op_type() == "Constant" && is_default_domain(node) {
                if let Some(out) = node.output.first() {
                    g.constants.insert(out, constant_of(node, out)?);
                }
            }
        }
        Ok(g)
    }

    /// The initializer, `Constant` output or folded tensor called `name`.
    pub fn constant(&self, name: &str) -> Option<Constant<'m>> {
        if let Some(c) = self.constants.get(name) {
            return Some(*c);
        }
        let folded: &'m Folded = self.folded;
        if let Some((name, t)) = folded.get_key_value(name) {
            return Some(Constant {
                name,
                source: Source::Folded(t),
            });
        }
        self.initializers.get(name).map(|t| Constant {
            name: t.name(),
            source: Source::Proto(t),
        })
    }

    /// Whether node `i` was folded into a constant.
    pub fn is_folded(&self, i: usize) -> bool {
        self.folded.is_folded(i)
    }

    pub fn folded(&self) -> &'m Folded {
        self.folded
    }

    /// The node making `tensor`.
    pub fn producer(&self, tensor: &str) -> Option<usize> {
        self.producers.get(tensor).copied()
    }

    pub fn is_initializer(&self, name: &str) -> bool {
        self.initializers.contains_key(name)
    }

    /// Nodes using `tensor`, once per use.
    pub fn consumers(&self, tensor: &str) -> &[usize] {
        self.consumers.get(tensor).map_or(&[], Vec::as_slice)
    }

    pub fn is_output(&self, tensor: &str) -> bool {
        self.outputs.contains(tensor)
    }
}

pub fn is_default_domain(node: &NodeProto) -> bool {
    matches!(node.domain(), "" | "ai.onnx")
}

/// `node 'conv1' (Conv)`, or for an unnamed node its first output.
pub fn describe(node: &NodeProto) -> String {
    match (node.name(), node.output.first()) {
        ("", Some(out)) => format!("the {} node making '{out}'", node.op_type()),
        ("", None) => format!("a {} node", node.op_type()),
        (name, _) => format!("node '{name}' ({})", node.op_type()),
    }
}

fn constant_of<'m>(node: &'m NodeProto, out: &'m str) -> Result<Constant<'m>, Error> {
    let attrs = Attrs::new(node);
    let source = if let Some(t) = attrs.tensor("value")? {
        Source::Proto(t)
    } else if let Some(f) = attrs.float("value_float")? {
        Source::Float(f)
    } else if let Some(i) = attrs.int("value_int")? {
        Source::Int(i)
    } else if let Some(v) = attrs.floats("value_floats")? {
        Source::Floats(v, false)
    } else if let Some(v) = attrs.ints("value_ints")? {
        Source::Ints(v, false)
    } else {
        Source::Other
    };
    Ok(Constant { name: out, source })
}

/// Float values as a tensor stores them (checked: `len` values).
pub enum F32s<'m> {
    /// `raw_data` of FLOAT: little-endian f32.
    Le32(&'m [u8]),
    /// `raw_data` of DOUBLE.
    Le64(&'m [u8]),
    F32(&'m [f32]),
    F64(&'m [f64]),
    One(f32),
    /// One value, `len` times (a folded `ConstantOfShape`).
    Fill(f32, usize),
}

impl F32s<'_> {
    pub fn len(&self) -> usize {
        match self {
            F32s::Le32(b) => b.len() / 4,
            F32s::Le64(b) => b.len() / 8,
            F32s::F32(v) => v.len(),
            F32s::F64(v) => v.len(),
            F32s::One(_) => 1,
            F32s::Fill(_, n) => *n,
        }
    }

    /// Value `i` (`i < len()`).
    #[inline]
    pub fn get(&self, i: usize) -> f32 {
        match self {
            F32s::Le32(b) => {
                let b = &b[4 * i..4 * i + 4];
                f32::from_le_bytes([b[0], b[1], b[2], b[3]])
            }
            F32s::Le64(b) => {
                let b = &b[8 * i..8 * i + 8];
                f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32
            }
            F32s::F32(v) => v[i],
            F32s::F64(v) => v[i] as f32,
            F32s::One(f) | F32s::Fill(f, _) => *f,
        }
    }
}

/// The longest folded integer list read (a shape, axes).
const MAX_FOLDED_INTS: usize = 1 << 16;

const FLOAT: i32 = tensor_proto::DataType::Float as i32;
const DOUBLE: i32 = tensor_proto::DataType::Double as i32;
const INT32: i32 = tensor_proto::DataType::Int32 as i32;
const INT64: i32 = tensor_proto::DataType::Int64 as i32;

/// The name of an ONNX data type, for messages.
pub fn type_name(t: i32) -> &'static str {
    tensor_proto::DataType::try_from(t).map_or("an unknown type", |t| t.as_str_name())
}

impl<'m> Constant<'m> {
    /// A tensor held by an attribute (`ConstantOfShape`'s value).
    pub fn of_tensor(name: &'m str, t: &'m TensorProto) -> Constant<'m> {
        Constant {
            name,
            source: Source::Proto(t),
        }
    }

    /// Dims of the tensor (empty for a scalar).
    pub fn dims(&self) -> Result<Vec<usize>, Error> {
        match self.source {
            Source::Proto(t) => t
                .dims
                .iter()
                .map(|&d| {
                    usize::try_from(d).map_err(|_| self.error(format!("has a negative dim {d}")))
                })
                .collect(),
            Source::Floats(v, scalar) => Ok(if scalar { vec![] } else { vec![v.len()] }),
            Source::Ints(v, scalar) => Ok(if scalar { vec![] } else { vec![v.len()] }),
            Source::Float(_) | Source::Int(_) | Source::Other => Ok(vec![]),
            Source::Folded(t) => Ok(t.dims.clone()),
        }
    }

    /// Elements: the product of the dims.
    pub fn len(&self) -> Result<usize, Error> {
        self.dims()?
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| self.error("has more elements than memory can hold".into()))
    }

    pub fn data_type(&self) -> i32 {
        match self.source {
            Source::Proto(t) => t.data_type(),
            Source::Floats(..) | Source::Float(_) => FLOAT,
            Source::Ints(..) | Source::Int(_) => INT64,
            Source::Other => 0,
            Source::Folded(t) => match t.data {
                Data::F32(_) => FLOAT,
                Data::I64(_) => INT64,
            },
        }
    }

    fn error(&self, message: String) -> Error {
        Error::new(format!("tensor '{}' {message}", self.name))
    }

    /// Refuses data kept in another file: `convjit import` reads one file.
    fn inline_proto(&self, t: &TensorProto) -> Result<(), Error> {
        if t.data_location() == tensor_proto::DataLocation::External {
            let location = t
                .external_data
                .iter()
                .find(|e| e.key() == "location")
                .map_or("", |e| e.value());
            return Err(self.error(format!(
                "keeps its data in an external file ('{location}'); convjit import reads \
                 self-contained models only: save the model with \
                 onnx.save_model(model, path, save_as_external_data=False)"
            )));
        }
        Ok(())
    }

    /// Checks that [`Constant::f32s`] will succeed, without copying data.
    pub fn check_f32s(&self) -> Result<(), Error> {
        match self.source {
            Source::Proto(t) => {
                self.inline_proto(t)?;
                let n = self.len()?;
                let width = match t.data_type() {
                    FLOAT => 4,
                    DOUBLE => 8,
                    other => {
                        return Err(self.error(format!(
                            "is {}; convjit computes in float32",
                            type_name(other)
                        )))
                    }
                };
                let found = match (&t.raw_data, t.data_type()) {
                    (Some(raw), _) => raw.len() / width,
                    (None, FLOAT) => t.float_data.len(),
                    (None, _) => t.double_data.len(),
                };
                let bytes_ok = t.raw_data.as_ref().is_none_or(|r| r.len() % width == 0);
                if found != n || !bytes_ok {
                    return Err(self.error(format!(
                        "holds {} values where its dims {:?} need {n}",
                        found,
                        self.dims()?
                    )));
                }
                Ok(())
            }
            Source::Floats(..) | Source::Float(_) => Ok(()),
            Source::Folded(t) if matches!(t.data, Data::F32(_)) => Ok(()),
            Source::Ints(..) | Source::Int(_) | Source::Other | Source::Folded(_) => {
                Err(self.not_floats())
            }
        }
    }

    fn not_floats(&self) -> Error {
        self.error("holds no float values".into())
    }

    /// The values as f32, row-major (FLOAT, or DOUBLE rounded).
    pub fn f32s(&self) -> Result<Vec<f32>, Error> {
        let v = self.f32_view()?;
        Ok((0..v.len()).map(|i| v.get(i)).collect())
    }

    /// The values where they lie, read one by one: a model's weights are
    /// transposed straight from the file's buffer, never copied whole.
    pub fn f32_view(&self) -> Result<F32s<'m>, Error> {
        self.check_f32s()?;
        Ok(match self.source {
            Source::Proto(t) => match (&t.raw_data, t.data_type()) {
                (Some(raw), FLOAT) => F32s::Le32(raw),
                (Some(raw), _) => F32s::Le64(raw),
                (None, FLOAT) => F32s::F32(&t.float_data),
                (None, _) => F32s::F64(&t.double_data),
            },
            Source::Floats(v, _) => F32s::F32(v),
            Source::Float(f) => F32s::One(f),
            Source::Folded(t) => match &t.data {
                Data::F32(Vals::All(v)) => F32s::F32(v),
                Data::F32(Vals::Fill(x)) => F32s::Fill(*x, self.len()?),
                Data::I64(_) => return Err(self.not_floats()),
            },
            Source::Ints(..) | Source::Int(_) | Source::Other => return Err(self.not_floats()),
        })
    }

    /// The values as i64 (INT64 or INT32), e.g. a `Reshape`'s shape.
    pub fn i64s(&self) -> Result<Vec<i64>, Error> {
        match self.source {
            Source::Proto(t) => {
                self.inline_proto(t)?;
                let n = self.len()?;
                let v: Vec<i64> = match (&t.raw_data, t.data_type()) {
                    (Some(raw), INT64) if raw.len() == n * 8 => raw
                        .chunks_exact(8)
                        .map(|b| {
                            i64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
                        })
                        .collect(),
                    (Some(raw), INT32) if raw.len() == n * 4 => raw
                        .chunks_exact(4)
                        .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64)
                        .collect(),
                    (None, INT64) => t.int64_data.clone(),
                    (None, INT32) => t.int32_data.iter().map(|&i| i as i64).collect(),
                    (_, INT64 | INT32) => {
                        return Err(self.error(format!(
                            "holds the wrong number of values for its dims {:?}",
                            self.dims()?
                        )))
                    }
                    (_, other) => {
                        return Err(self.error(format!(
                            "is {} where integers were expected",
                            type_name(other)
                        )))
                    }
                };
                if v.len() != n {
                    return Err(self.error(format!(
                        "holds {} values where its dims {:?} need {n}",
                        v.len(),
                        self.dims()?
                    )));
                }
                Ok(v)
            }
            Source::Ints(v, _) => Ok(v.to_vec()),
            Source::Int(i) => Ok(vec![i]),
            Source::Folded(Tensor {
                data: Data::I64(v), ..
            }) => {
                // Integer lists are shapes and axes: a folded one (which
                // may repeat one value) is read only when short.
                let n = self.len()?;
                if n > MAX_FOLDED_INTS {
                    return Err(self.error(format!("holds {n} integers, too many for a shape")));
                }
                Ok((0..n).map(|i| v.get(i)).collect())
            }
            Source::Floats(..) | Source::Float(_) | Source::Other | Source::Folded(_) => {
                Err(self.error("holds no integer values".into()))
            }
        }
    }
}
