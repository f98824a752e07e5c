//! Constant folding and what it feeds, on graphs built here: weights
//! computed in the graph import as if they were initializers, per-channel
//! steps after a conv fold into it, `Sum` is a residual; and hostile
//! constant subgraphs (a huge `ConstantOfShape`, a cycle, shapes that do
//! not broadcast, too many values) leave their convs out with a note,
//! quickly and in little memory, never a panic.

use convjit_onnx::proto::attribute_proto::AttributeType;
use convjit_onnx::proto::tensor_proto::DataType;
use convjit_onnx::proto::tensor_shape_proto::{dimension, Dimension};
use convjit_onnx::proto::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use convjit_onnx::{import, Import, Options};
use prost::Message;

fn node(op: &str, inputs: &[&str], output: &str, attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: vec![output.to_string()],
        name: Some(output.to_string()),
        op_type: Some(op.to_string()),
        attribute: attrs,
        ..Default::default()
    }
}

fn ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn tensor_attr(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Tensor as i32),
        t: Some(t),
        ..Default::default()
    }
}

fn floats(name: &str, dims: &[i64], v: Vec<f32>) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: dims.to_vec(),
        data_type: Some(DataType::Float as i32),
        float_data: v,
        ..Default::default()
    }
}

fn int64s(name: &str, v: &[i64]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![v.len() as i64],
        data_type: Some(DataType::Int64 as i32),
        int64_data: v.to_vec(),
        ..Default::default()
    }
}

/// A graph input `x` of shape `[1, c, h, w]`.
fn input(c: i64, h: i64, w: i64) -> ValueInfoProto {
    let dim = |v| Dimension {
        value: Some(dimension::Value::DimValue(v)),
        ..Default::default()
    };
    ValueInfoProto {
        name: Some("x".into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![dim(1), dim(c), dim(h), dim(w)],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, initializers: Vec<TensorProto>, c: i64, out: &str) -> Vec<u8> {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            node: nodes,
            initializer: initializers,
            input: vec![input(c, 6, 6)],
            output: vec![ValueInfoProto {
                name: Some(out.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
    .encode_to_vec()
}

fn imported(bytes: Vec<u8>) -> Import {
    import(bytes, &Options::default()).unwrap_or_else(|e| panic!("{e}"))
}

fn random(n: usize, seed: u32) -> Vec<f32> {
    (0..n as u32)
        .map(|i| ((i.wrapping_mul(2_654_435_761) ^ seed) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// `Conv(x, Transpose(Reshape(flat weights)))`, scaled by
/// `Mul(Unsqueeze(s))`, shifted by `Sub(t)`, then Relu and `Sum` with x:
/// one stage `conv 3x3 -> 4, pad same, bias, relu, residual` whose
/// arrays are the folded ones.
#[test]
fn computed_weights_and_channel_steps_fold_into_one_stage() {
    let (c, co) = (4usize, 4usize);
    let w = random(co * c * 9, 7); // [Co][Ci][3][3], stored as [Ci][Co][3][3] below
    let mut stored = vec![0.0; w.len()];
    for o in 0..co {
        for i in 0..c {
            for k in 0..9 {
                stored[(i * co + o) * 9 + k] = w[(o * c + i) * 9 + k];
            }
        }
    }
    let s = [0.5f32, 2.0, -1.0, 3.0];
    let t = [0.25f32, -0.5, 1.0, 0.0];
    let nodes = vec![
        node("Reshape", &["w_flat", "w_shape"], "w_ciohw", vec![]),
        node(
            "Transpose",
            &["w_ciohw"],
            "w",
            vec![ints("perm", &[1, 0, 2, 3])],
        ),
        node("Unsqueeze", &["s", "axes"], "s3", vec![]),
        node(
            "Conv",
            &["x", "w", "b"],
            "y",
            vec![ints("pads", &[1, 1, 1, 1]), ints("kernel_shape", &[3, 3])],
        ),
        node("Mul", &["s3", "y"], "ys", vec![]),
        node("Sub", &["ys", "t"], "yt", vec![]),
        node("Relu", &["yt"], "r", vec![]),
        node("Sum", &["x", "r"], "out", vec![]),
    ];
    let inits = vec![
        floats("w_flat", &[(co * c * 9) as i64], stored),
        int64s("w_shape", &[c as i64, co as i64, 3, 3]),
        floats("b", &[co as i64], vec![1.0, 2.0, 3.0, 4.0]),
        floats("s", &[co as i64], s.to_vec()),
        int64s("axes", &[1, 2]),
        floats("t", &[1, co as i64, 1, 1], t.to_vec()),
    ];
    let m = imported(model(nodes, inits, c as i64, "out"));
    assert!(m.notes.is_empty(), "{:?}", m.notes);
    assert_eq!(m.skipped_line(), None);
    assert_eq!(m.folded_nodes, 3);
    assert_eq!(m.layers.len(), 1);
    let text = &m.layers[0].text;
    assert!(
        text.contains("conv 3x3 -> 4, pad same, bias, relu, residual"),
        "{text}"
    );
    assert!(
        text.contains("Mul 'ys' + Sub 'yt' + Relu 'r' + Sum 'out'"),
        "{text}"
    );
    let arrays = m.arrays(0).unwrap();
    let (_, weight) = arrays.iter().find(|(k, _)| k.ends_with(".weight")).unwrap();
    let (_, bias) = arrays.iter().find(|(k, _)| k.ends_with(".bias")).unwrap();
    assert_eq!(weight.shape, [3, 3, c, co]);
    for o in 0..co {
        for i in 0..c {
            for k in 0..9 {
                let want = w[(o * c + i) * 9 + k] * s[o];
                let got = weight.data[(k * c + i) * co + o];
                assert!(
                    (got - want).abs() < 1e-6,
                    "w[{o}][{i}][{k}]: {got} vs {want}"
                );
            }
        }
        let want = (o as f32 + 1.0) * s[o] - t[o];
        assert!((bias.data[o] - want).abs() < 1e-6, "bias {o}");
    }
}

/// A conv whose weights come from `source` (nodes making `w` for a conv
/// of 3 -> 2 channels, 1x1), imported: its note, and how long it took.
fn weights_from(nodes: Vec<NodeProto>, inits: Vec<TensorProto>) -> (Import, std::time::Duration) {
    let mut nodes = nodes;
    nodes.push(node("Conv", &["x", "w"], "y", vec![]));
    let start = std::time::Instant::now();
    let m = imported(model(nodes, inits, 3, "y"));
    (m, start.elapsed())
}

fn value(v: f32) -> AttributeProto {
    tensor_attr("value", floats("value", &[1], vec![v]))
}

#[test]
fn a_huge_constant_of_shape_is_refused_before_memory_is_taken() {
    // 2^62 elements as weights, and 2^26 + 1 repeated values (free)
    // multiplied by an initializer: just past what folding may store.
    for shape in [vec![1 << 31, 1 << 31, 1, 1], vec![1, 1, 1, (1 << 26) + 1]] {
        let (m, took) = weights_from(
            vec![
                node("ConstantOfShape", &["shape"], "big", vec![value(0.5)]),
                node("Mul", &["big", "k"], "w", vec![]),
            ],
            vec![int64s("shape", &shape), floats("k", &[1], vec![2.0])],
        );
        assert!(m.layers.is_empty());
        let note = &m.notes[0];
        assert!(note.contains("could not fold"), "{note}");
        assert!(
            note.contains("values") || note.contains("elements"),
            "{note}"
        );
        assert!(took.as_secs_f64() < 1.0, "{took:?}");
    }
    // A repeated value costs nothing, and is refused where it is used as
    // something it cannot be (a 2^28-value Clip bound, a shape).
    let (m, _) = weights_from(
        vec![
            node("ConstantOfShape", &["shape"], "fill", vec![value(0.5)]),
            node("Reshape", &["fill", "wshape"], "w", vec![]),
        ],
        vec![int64s("shape", &[6]), int64s("wshape", &[2, 3, 1, 1])],
    );
    assert_eq!(m.layers.len(), 1, "{:?}", m.notes);
    assert_eq!(m.arrays(0).unwrap()[0].1.data, [0.5; 6]);
}

#[test]
fn a_cycle_of_shape_nodes_is_refused_before_folding() {
    // a = Reshape(k, Shape(b)), b = Reshape(k, Shape(a)): each waits for
    // the other. ONNX forbids cycles: refused (validate.rs) before the
    // folder (which would never find them ready) sees them.
    let nodes = vec![
        node("Shape", &["b"], "sa", vec![]),
        node("Reshape", &["k", "sa"], "a", vec![]),
        node("Shape", &["a"], "sb", vec![]),
        node("Reshape", &["k", "sb"], "b", vec![]),
        node("Identity", &["a"], "w", vec![]),
        node("Conv", &["x", "w"], "y", vec![]),
    ];
    let inits = vec![floats("k", &[2, 3, 1, 1], vec![1.0; 6])];
    let start = std::time::Instant::now();
    let Err(e) = import(model(nodes, inits, 3, "y"), &Options::default()) else {
        panic!("a cycle imported")
    };
    assert!(e.to_string().contains("has a cycle through node '"), "{e}");
    assert!(start.elapsed().as_secs_f64() < 1.0);
}

#[test]
fn mismatched_broadcasts_and_bad_ops_say_why() {
    let cases: Vec<(Vec<NodeProto>, Vec<TensorProto>, &str)> = vec![
        (
            vec![node("Add", &["a", "b"], "w", vec![])],
            vec![
                floats("a", &[2, 3, 1, 2], vec![1.0; 12]),
                floats("b", &[3], vec![1.0; 3]),
            ],
            "do not broadcast",
        ),
        (
            vec![node("Reshape", &["a", "s"], "w", vec![])],
            vec![floats("a", &[6], vec![1.0; 6]), int64s("s", &[2, 3, 1, 2])],
            "does not fit",
        ),
        (
            vec![node(
                "Transpose",
                &["a"],
                "w",
                vec![ints("perm", &[0, 0, 1, 2])],
            )],
            vec![floats("a", &[2, 3, 1, 1], vec![1.0; 6])],
            "not a permutation",
        ),
        (
            vec![
                node("Div", &["i", "zero"], "q", vec![]),
                node("Reshape", &["a", "q"], "w", vec![]),
            ],
            vec![
                floats("a", &[6], vec![1.0; 6]),
                int64s("i", &[2, 3, 1, 1]),
                int64s("zero", &[0]),
            ],
            "divides an integer by zero",
        ),
        (
            vec![node("Gather", &["a", "idx"], "w", vec![])],
            vec![
                floats("a", &[2, 3, 1, 1], vec![1.0; 6]),
                int64s("idx", &[0, 5]),
            ],
            "out of range",
        ),
        (
            vec![node("Sin", &["a"], "w", vec![])],
            vec![floats("a", &[2, 3, 1, 1], vec![1.0; 6])],
            "does not fold Sin",
        ),
    ];
    for (nodes, inits, want) in cases {
        let (m, _) = weights_from(nodes, inits);
        assert!(m.layers.is_empty(), "{want}");
        assert!(m.notes[0].contains(want), "{want}: {}", m.notes[0]);
        assert!(m.notes[0].contains("initializer"), "{}", m.notes[0]);
    }
}

/// Many convs whose weights depend on the graph input: one summary line
/// names the first, the count of the rest and the kind; `notes` keeps
/// one per node.
#[test]
fn notes_of_one_kind_are_summarized() {
    let mut nodes = vec![node("Mul", &["x", "x"], "xx", vec![])];
    for i in 0..20 {
        nodes.push(node("Conv", &["x", "xx"], &format!("y{i}"), vec![]));
    }
    let m = imported(model(nodes, vec![], 3, "y0"));
    assert_eq!(m.notes.len(), 20);
    let summary = m.note_summary();
    assert_eq!(summary.len(), 1, "{summary:?}");
    assert!(summary[0].starts_with(&m.notes[0]), "{}", summary[0]);
    assert!(
        summary[0].ends_with("(and 19 more Conv nodes: weights known only at run time)"),
        "{}",
        summary[0]
    );
    assert!(summary[0].contains("graph input"), "{}", summary[0]);
}

/// xorshift64*: a seeded stream.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

/// Weights made by every op the folder knows; then, seeded, numbers that
/// break careless arithmetic put in its integer initializers and
/// attributes, inputs dropped and nodes swapped: imports (or says why) and
/// never panics.
#[test]
fn strange_numbers_in_folded_subgraphs_never_panic() {
    let nodes = vec![
        node("Shape", &["k"], "ks", vec![]),
        node("Gather", &["ks", "i0"], "k0", vec![]),
        node("Gather", &["ks", "i1"], "k1", vec![]),
        node(
            "Concat",
            &["k0", "k1", "ones"],
            "wshape",
            vec![ints_attr("axis", 0)],
        ),
        node("ConstantOfShape", &["fshape"], "fill", vec![value(0.5)]),
        node("Unsqueeze", &["fill", "axes"], "u", vec![]),
        node("Squeeze", &["u", "axes"], "sq", vec![]),
        node("Flatten", &["sq"], "fl", vec![ints_attr("axis", 1)]),
        node("Cast", &["fl"], "c", vec![ints_attr("to", 1)]),
        node("Reshape", &["c", "wshape"], "r", vec![]),
        node("Transpose", &["k"], "kt", vec![ints("perm", &[0, 1, 3, 2])]),
        node("Mul", &["r", "kt"], "m", vec![]),
        node("Reciprocal", &["m"], "rc", vec![]),
        node("Sqrt", &["rc"], "sr", vec![]),
        node("Neg", &["sr"], "ng", vec![]),
        node("Div", &["ng", "k"], "dv", vec![]),
        node("Sub", &["dv", "k"], "sb", vec![]),
        node("Identity", &["sb"], "w", vec![]),
        node("Conv", &["x", "w"], "y", vec![]),
    ];
    let inits = vec![
        floats("k", &[2, 3, 1, 1], random(6, 3)),
        int64s("i0", &[0]),
        int64s("i1", &[1]),
        int64s("ones", &[1, 1]),
        int64s("fshape", &[6]),
        int64s("axes", &[0]),
    ];
    let base = ModelProto::decode(model(nodes, inits, 3, "y").as_slice()).unwrap();
    let ok = imported(base.encode_to_vec());
    assert_eq!(ok.layers.len(), 1, "{:?}", ok.notes);
    assert_eq!(ok.folded_nodes, 18);

    const EDGES: &[i64] = &[0, -1, 1, 2, 6, 1 << 20, 1 << 31, i64::MAX, i64::MIN, -7];
    let mut rng = Rng(0xF01D);
    for _ in 0..3000 {
        let mut m = base.clone();
        let g = m.graph.as_mut().unwrap();
        for _ in 0..1 + rng.below(3) {
            let edge = EDGES[rng.below(EDGES.len())];
            match rng.below(4) {
                0 => {
                    let at = rng.below(g.initializer.len());
                    let t = &mut g.initializer[at];
                    if !t.int64_data.is_empty() {
                        let i = rng.below(t.int64_data.len());
                        t.int64_data[i] = edge;
                    } else {
                        let i = rng.below(t.dims.len());
                        t.dims[i] = edge;
                    }
                }
                1 => {
                    let n = rng.below(g.node.len());
                    if let Some(a) = g.node[n].attribute.first_mut() {
                        match a.ints.len() {
                            0 => a.i = Some(edge),
                            l => a.ints[rng.below(l)] = edge,
                        }
                    }
                }
                2 => {
                    let n = rng.below(g.node.len());
                    let keep = rng.below(g.node[n].input.len() + 1);
                    g.node[n].input.truncate(keep);
                }
                _ => {
                    let (a, b) = (rng.below(g.node.len()), rng.below(g.node.len()));
                    g.node.swap(a, b);
                }
            }
        }
        if let Ok(m) = import(m.encode_to_vec(), &Options::default()) {
            for i in 0..m.layers.len() {
                let _ = m.arrays(i);
            }
        }
    }
}

fn ints_attr(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Int as i32),
        i: Some(v),
        ..Default::default()
    }
}

/// A classifier's weights transposed in the graph are folded only while
/// small: nothing the importer reads depends on them.
#[test]
fn constants_nothing_reads_are_folded_only_when_small() {
    for (rows, folded) in [(10usize, 1), (1100, 0)] {
        let nodes = vec![
            node("Conv", &["x", "w"], "y", vec![]),
            node("Flatten", &["y"], "f", vec![]),
            node("Transpose", &["fc"], "fct", vec![]),
            node("Gemm", &["f", "fct"], "out", vec![]),
        ];
        let inits = vec![
            floats("w", &[2, 3, 1, 1], random(6, 1)),
            floats("fc", &[rows as i64, 1000], vec![0.5; rows * 1000]),
        ];
        let m = imported(model(nodes, inits, 3, "out"));
        assert_eq!(m.layers.len(), 1);
        assert_eq!(m.folded_nodes, folded, "{rows} rows");
    }
}
