//! Graphs that are not ONNX (ONNX Runtime refuses to load each) are
//! refused with a message naming the tensor or node at fault, never
//! imported by guessing which definition was meant; names a model may
//! hold (long ones, control characters) are bounded where convjit makes
//! names from them.

use convjit_onnx::proto::tensor_proto::DataType;
use convjit_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use convjit_onnx::proto::{
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use convjit_onnx::{import, Import, Options};
use prost::Message;

fn node(op: &str, name: &str, inputs: &[&str], output: &str) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: Some(name.to_string()),
        op_type: Some(op.to_string()),
        ..Default::default()
    }
}

/// A 1x1 Conv `name`: `x` (3 channels) -> `y` through weights `w`.
fn conv(name: &str, x: &str, w: &str, y: &str) -> NodeProto {
    node("Conv", name, &[x, w], y)
}

/// `[co, 3, 1, 1]` float weights.
fn weights(name: &str, co: i64) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![co, 3, 1, 1],
        data_type: Some(DataType::Float as i32),
        float_data: vec![0.5; co as usize * 3],
        ..Default::default()
    }
}

/// A tensor `[1, 3, 4, 4]` of type `t`.
fn value(name: &str, t: DataType) -> ValueInfoProto {
    let dim = |v| Dimension {
        value: Some(dimension::Value::DimValue(v)),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(t as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![dim(1), dim(3), dim(4), dim(4)],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct Graph {
    nodes: Vec<NodeProto>,
    initializers: Vec<TensorProto>,
    inputs: Vec<ValueInfoProto>,
    value_info: Vec<ValueInfoProto>,
    output: &'static str,
}

impl Graph {
    /// `nodes` reading the float input `x`, with weights `w` (3 -> 3).
    fn new(nodes: Vec<NodeProto>) -> Graph {
        Graph {
            nodes,
            initializers: vec![weights("w", 3)],
            inputs: vec![value("x", DataType::Float)],
            value_info: vec![],
            output: "y",
        }
    }

    fn import(self) -> Result<Import, convjit_onnx::Error> {
        let bytes = ModelProto {
            ir_version: Some(8),
            opset_import: vec![OperatorSetIdProto {
                domain: Some(String::new()),
                version: Some(13),
            }],
            graph: Some(GraphProto {
                node: self.nodes,
                initializer: self.initializers,
                input: self.inputs,
                value_info: self.value_info,
                output: vec![ValueInfoProto {
                    name: Some(self.output.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
        .encode_to_vec();
        import(bytes, &Options::default())
    }

    /// The error, which must contain each of `words`.
    fn refused(self, words: &[&str]) -> String {
        let message = match self.import() {
            Ok(_) => panic!("imported; expected an error with {words:?}"),
            Err(e) => e.to_string(),
        };
        for w in words {
            assert!(message.contains(w), "{w:?} not in: {message}");
        }
        message
    }
}

#[test]
fn a_valid_graph_imports() {
    let m = Graph::new(vec![conv("c", "x", "w", "y")]).import().unwrap();
    assert_eq!(m.layers.len(), 1);
}

/// Nodes stored out of order (a consumer before its producer: not ONNX,
/// but ONNX Runtime runs it) import as the sorted graph does; the shapes
/// walk used to meet the Relu before the Conv and leave both out.
#[test]
fn nodes_out_of_order_import_as_sorted() {
    let chain = |order: &[usize]| {
        let nodes = [
            conv("c", "x", "w", "t"),
            node("Relu", "r", &["t"], "u"),
            conv("d", "u", "w", "y"),
        ];
        let g = Graph::new(order.iter().map(|&i| nodes[i].clone()).collect());
        let m = g.import().unwrap();
        m.layers.iter().map(|l| l.text.clone()).collect::<Vec<_>>()
    };
    let sorted = chain(&[0, 1, 2]);
    assert!(!sorted.is_empty());
    assert_eq!(chain(&[2, 1, 0]), sorted);
    assert_eq!(chain(&[1, 0, 2]), sorted);
}

#[test]
fn two_initializers_of_one_name_are_refused() {
    let mut g = Graph::new(vec![conv("c", "x", "w", "y")]);
    g.initializers.push(weights("w", 2));
    g.refused(&["two initializers are named 'w'"]);
}

#[test]
fn a_tensor_written_twice_is_refused() {
    // Two nodes writing 'y' (ONNX Runtime: "Duplicate definition").
    let g = Graph::new(vec![conv("c", "x", "w", "y"), conv("d", "x", "w", "y")]);
    g.refused(&["tensor 'y'", "node 'c' (Conv)", "node 'd' (Conv)"]);
    // A node writing an initializer, or a graph input.
    let g = Graph::new(vec![
        conv("c", "x", "w", "y"),
        node("Relu", "r", &["y"], "w"),
    ]);
    g.refused(&["tensor 'w'", "an initializer", "node 'r' (Relu)"]);
    let g = Graph::new(vec![conv("c", "x", "w", "x")]);
    g.refused(&["tensor 'x'", "a graph input", "node 'c' (Conv)"]);
    // One node listing an output twice.
    let mut n = conv("c", "x", "w", "y");
    n.output.push("y".into());
    Graph::new(vec![n]).refused(&["tensor 'y'", "the same node"]);
    // Two graph inputs of one name.
    let mut g = Graph::new(vec![conv("c", "x", "w", "y")]);
    g.inputs.push(value("x", DataType::Float));
    g.refused(&["graph input 'x' is listed twice"]);
}

#[test]
fn an_initializer_listed_as_an_input_is_its_default() {
    // Models before IR version 4 list every initializer among the inputs.
    let mut g = Graph::new(vec![conv("c", "x", "w", "y")]);
    g.inputs.push(ValueInfoProto {
        name: Some("w".into()),
        ..Default::default()
    });
    assert_eq!(g.import().unwrap().layers.len(), 1);
}

#[test]
fn a_cycle_is_refused() {
    // Conv -> Add -> Relu feeding back into the Add.
    let g = Graph::new(vec![
        conv("c", "x", "w", "a"),
        node("Add", "add", &["a", "b"], "y"),
        node("Relu", "relu", &["y"], "b"),
    ]);
    let why = g.refused(&["the graph has a cycle through node '"]);
    assert!(why.contains("'add'") || why.contains("'relu'"), "{why}");
    // A Conv reading its own output.
    Graph::new(vec![conv("c", "y", "w", "y")])
        .refused(&["the graph has a cycle through node 'c' (Conv)"]);
    // Two Convs reading each other, after a node that is fine.
    let g = Graph::new(vec![
        node("Relu", "r", &["x"], "r"),
        conv("c1", "b", "w", "a"),
        conv("c2", "a", "w", "b"),
        node("Add", "add", &["b", "r"], "y"),
    ]);
    let why = g.refused(&["the graph has a cycle through node 'c"]);
    assert!(!why.contains("'add'"), "{why}");
}

#[test]
fn a_conv_reading_integers_is_refused() {
    // ONNX Runtime: INVALID_GRAPH (Conv's T is a float type).
    let mut g = Graph::new(vec![conv("c", "x", "w", "y")]);
    g.inputs = vec![value("x", DataType::Int32)];
    g.refused(&["node 'c' (Conv) reads 'x', which is INT32", "float"]);
    // Declared in value_info, after a node: the same.
    let mut g = Graph::new(vec![
        node("Cast", "cast", &["x"], "i"),
        conv("c", "i", "w", "y"),
    ]);
    g.value_info.push(value("i", DataType::Uint8));
    g.refused(&["reads 'i', which is UINT8"]);
    // A float type other than the weights'.
    let mut g = Graph::new(vec![conv("c", "x", "w", "y")]);
    g.inputs = vec![value("x", DataType::Double)];
    g.refused(&["reads 'x', which is DOUBLE", "weights 'w', which are FLOAT"]);
}

#[test]
fn long_node_names_make_short_distinct_names() {
    // Two Convs in one chain whose names share their first 100,000
    // characters: stage names and `.npz` keys cut to 64, told apart.
    let long = "a".repeat(100_000);
    let g = Graph::new(vec![
        conv(&format!("{long}1"), "x", "w", "t"),
        conv(&format!("{long}2"), "t", "w", "y"),
    ]);
    let m = g.import().unwrap();
    let l = &m.layers[0].layer;
    let a64 = "a".repeat(64);
    assert_eq!(l.name, a64);
    let stages: Vec<&str> = l.stages.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(stages, [a64.clone(), format!("{a64}_2")]);
    let keys: Vec<String> = m.arrays(0).unwrap().into_iter().map(|(k, _)| k).collect();
    assert_eq!(keys, [format!("{a64}.weight"), format!("{a64}_2.weight")]);
    // The comments keep the first 200 characters (whole names of
    // megabytes made a `.conv` past the size `check` reads).
    let text = &m.layers[0].text;
    assert!(
        text.contains(&format!("Conv '{}... (100008 characters)", "a".repeat(194))),
        "{}",
        &text[..400]
    );
    assert!(text.len() < 4_000, "{} bytes", text.len());
}

#[test]
fn control_characters_in_names_are_escaped_in_errors_and_notes() {
    // An error naming a tensor and nodes.
    let y = "y\n\u{1b}[2Jfake: line";
    let mut g = Graph::new(vec![
        conv("c\r", "x", "w", y),
        conv("d\u{202e}", "x", "w", y),
    ]);
    g.output = "x";
    let why = g.refused(&[
        "tensor 'y\\n\\u{1b}[2Jfake: line'",
        "'c\\r'",
        "'d\\u{202e}'",
    ]);
    assert!(!why.contains(|c: char| c.is_control()), "{why:?}");
    // A note (weights not constant) naming the node and tensor.
    let m = Graph::new(vec![conv("c\u{1b}", "x", "x\u{7}", "y")]);
    let mut m = m;
    m.inputs.push(value("x\u{7}", DataType::Float));
    let m = m.import().unwrap();
    assert_eq!(m.notes.len(), 1);
    assert!(m.notes[0].contains("'c\\u{1b}'"), "{}", m.notes[0]);
    assert!(
        !m.notes[0].contains(|c: char| c.is_control()),
        "{:?}",
        m.notes[0]
    );
}
