//! No input makes the importer panic: every fixture model truncated at
//! many lengths, with random bytes changed, and with random numbers put in
//! its attributes, dims and shapes (seeded) is imported, and whatever
//! imports has its weights produced.

use convjit_onnx::proto::{tensor_shape_proto::dimension::Value, type_proto, ModelProto};
use convjit_onnx::{import, Options};
use prost::Message;
use std::path::Path;

/// xorshift64*: a seeded stream, enough to pick bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn exercise(bytes: Vec<u8>, options: &Options) {
    if let Ok(imported) = import(bytes, options) {
        for i in 0..imported.layers.len() {
            let _ = imported.arrays(i);
        }
    }
}

#[test]
fn damaged_models_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut rng = Rng(0x0DD5_EED5);
    let interesting: &[u8] = &[0, 1, 0x7f, 0x80, 0xff, 0x08, 0x10, 0x12, 0x1a, 0x22, 0x3a];
    let mut models = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        models += 1;
        let model = std::fs::read(&path).unwrap();
        let options = [
            Options::default(),
            Options {
                input_shape: Some([5, 7, 3]),
            },
        ];
        let step = (model.len() / 200).max(1);
        for len in (0..model.len()).step_by(step) {
            exercise(model[..len].to_vec(), &options[0]);
        }
        for case in 0..1500 {
            let mut m = model.clone();
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(m.len());
                m[at] = if rng.below(2) == 0 {
                    interesting[rng.below(interesting.len())]
                } else {
                    rng.next() as u8
                };
            }
            exercise(m, &options[case % 2]);
        }
    }
    assert!(models >= 8);
}

/// Numbers that break arithmetic that is not careful.
const EDGES: &[i64] = &[
    0,
    -1,
    1,
    2,
    3,
    7,
    65536,
    65537,
    1 << 31,
    i64::MAX,
    i64::MIN,
    -65536,
];

/// One random change to the model's numbers or structure.
fn mutate(m: &mut ModelProto, rng: &mut Rng) {
    let Some(g) = m.graph.as_mut() else { return };
    let edge = |rng: &mut Rng| EDGES[rng.below(EDGES.len())];
    match rng.below(6) {
        0 | 1 if !g.node.is_empty() => {
            let n = rng.below(g.node.len());
            let node = &mut g.node[n];
            if node.attribute.is_empty() {
                node.input.truncate(rng.below(node.input.len() + 1));
                return;
            }
            let a = rng.below(node.attribute.len());
            let attr = &mut node.attribute[a];
            if attr.ints.is_empty() {
                attr.i = Some(edge(rng));
                attr.f = Some(edge(rng) as f32);
            } else {
                let i = rng.below(attr.ints.len());
                attr.ints[i] = edge(rng);
                if rng.below(4) == 0 {
                    attr.ints.pop();
                }
            }
        }
        2 if !g.initializer.is_empty() => {
            let t = rng.below(g.initializer.len());
            let dims = &mut g.initializer[t].dims;
            if !dims.is_empty() {
                let i = rng.below(dims.len());
                dims[i] = edge(rng);
            }
        }
        3 => {
            for v in g.input.iter_mut().chain(g.value_info.iter_mut()) {
                if let Some(type_proto::Value::TensorType(t)) =
                    v.r#type.as_mut().and_then(|t| t.value.as_mut())
                {
                    if let Some(shape) = t.shape.as_mut() {
                        if let Some(d) = shape.dim.get_mut(rng.below(5)) {
                            d.value = Some(Value::DimValue(edge(rng)));
                        }
                    }
                }
            }
        }
        4 if !g.node.is_empty() => {
            let n = rng.below(g.node.len());
            let other = rng.below(g.node.len());
            g.node.swap(n, other);
        }
        _ => {
            if let Some(t) = g.initializer.get_mut(rng.below(4)) {
                t.data_type = Some(rng.below(20) as i32);
            }
        }
    }
}

#[test]
fn models_with_strange_numbers_never_panic() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut rng = Rng(0xA77_12B5);
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let original = ModelProto::decode(std::fs::read(&path).unwrap().as_slice()).unwrap();
        for case in 0..400 {
            let mut m = original.clone();
            for _ in 0..1 + rng.below(3) {
                mutate(&mut m, &mut rng);
            }
            let options = Options {
                input_shape: (case % 3 == 0).then_some([5, 7, 3]),
            };
            exercise(m.encode_to_vec(), &options);
        }
    }
}

/// Node and tensor names of 70,000 characters (one once panicked the
/// importer's text in a `{:width$}`): every fixture still imports as it
/// did, its layers' text validates, and the names' first 200 characters
/// are in its comments;
/// the layer and stage names (and `.npz` keys) are cut to 64 characters,
/// told apart by `_2`, `_3` where two are cut alike (`tests/validate.rs`).
#[test]
fn long_names_import() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "onnx") {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        let Ok(before) = import(bytes.clone(), &Options::default()) else {
            continue;
        };
        let mut m = ModelProto::decode(bytes.as_slice()).unwrap();
        let graph = m.graph.as_mut().unwrap();
        for (i, n) in graph.node.iter_mut().enumerate() {
            n.name = Some(format!("{i}{}", "n".repeat(70_000)));
        }
        let after = import(m.encode_to_vec(), &Options::default()).unwrap();
        assert_eq!(
            after.layers.len(),
            before.layers.len(),
            "{}",
            path.display()
        );
        for (i, l) in after.layers.iter().enumerate() {
            assert!(convjit_ir::compile_source(&l.text).is_ok());
            // The comments keep 200 characters of each name.
            assert!(
                l.text.contains(&format!("{}... (700", "n".repeat(190))),
                "{}",
                path.display()
            );
            // Names made from them are cut: 64 characters and `_N`.
            assert!(l.layer.name.len() <= 70, "{}", l.layer.name);
            if let Ok(arrays) = after.arrays(i) {
                for (key, _) in arrays {
                    assert!(key.len() <= 90, "{key}");
                }
            }
        }
        checked += 1;
    }
    assert!(checked > 0);
}
