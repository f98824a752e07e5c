//! Every way a file comes in, fed arbitrary bytes through the functions
//! the command line calls: a `.conv` file (`load_layers`), an input
//! `.npy` (`load_input`), a weights `.npz` (`load_weights`) and an ONNX
//! model (`read_model`, `import`). Each gives a value or a clean error
//! whose message is bounded, never a panic. (The crates' own fuzz tests
//! go deeper into each format: `crates/ir/tests/fuzz.rs`,
//! `crates/npy/tests/fuzz.rs`, `crates/onnx/tests/robust.rs`.)

use proptest::prelude::*;
use std::io::Write;

const LAYER: &str = "layer l { input 3x3x2\n d: depthwise 3x3, pad same, bias\n}\n";

fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(bytes).unwrap();
    f
}

/// Bytes with the starts of each format in them, and their parts.
fn bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        Just(b"\x93NUMPY\x01\x00".to_vec()),
        Just(b"PK\x03\x04".to_vec()),
        Just(b"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 3, 2), }".to_vec()),
        Just(LAYER.as_bytes().to_vec()),
        Just(vec![0x08, 0x08, 0x3a, 0x10]),
        Just(vec![0xff; 8]),
    ];
    prop::collection::vec(piece, 0..12).prop_map(|v| v.concat())
}

fn bounded(e: &convjit::Error) {
    let m = e.to_string();
    assert!(m.len() < 20_000, "{} bytes of message", m.len());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_through_every_loader(b in bytes()) {
        let f = file(&b);
        let layer = &convjit::parse_layers("l.conv", LAYER).unwrap()[0];
        if let Err(e) = convjit::load_layers(f.path()) {
            bounded(&e);
        }
        if let Err(e) = convjit::load_input(layer, f.path()) {
            bounded(&e);
        }
        if let Err(e) = convjit::load_weights(layer, f.path()) {
            bounded(&e);
        }
        if let Ok(model) = convjit_onnx::read_model(f.path()) {
            if let Ok(imported) = convjit_onnx::import(model, &convjit_onnx::Options::default()) {
                for i in 0..imported.layers.len() {
                    let _ = imported.arrays(i);
                }
            }
        }
    }
}
