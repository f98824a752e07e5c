//! The importer against ONNX Runtime: every fixture model of
//! `tests/fixtures/` (made by `make_fixtures.py`, which also stored ONNX
//! Runtime's values of each layer's input and output tensors) is imported,
//! each layer run by the interpreter and by the JIT of every code generator
//! this CPU runs, and compared with ONNX Runtime's output.

mod common;

use common::{check, nhwc};
use convjit_jit::Kernel;
use convjit_onnx::{import, Options};
use convjit_plan::{Backend, Options as JitOptions};
use serde_json::Value;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn manifest() -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixtures().join("manifest.json")).unwrap())
        .unwrap()
}

#[test]
fn every_layer_matches_onnxruntime() {
    let manifest = manifest();
    let models = manifest["models"].as_object().unwrap();
    assert!(models.len() >= 8);
    let mut worst = 0f32;
    let mut layers_run = 0;
    for (name, spec) in models {
        let bytes = std::fs::read(fixtures().join(format!("{name}.onnx"))).unwrap();
        let input_shape = spec["options"]["input_shape"].as_array().map(|v| {
            let d: Vec<usize> = v.iter().map(|x| x.as_u64().unwrap() as usize).collect();
            [d[0], d[1], d[2]]
        });
        let imported =
            import(bytes, &Options { input_shape }).unwrap_or_else(|e| panic!("{name}: {e}"));
        let found: Vec<(String, String, usize)> = imported
            .layers
            .iter()
            .map(|l| (l.input.clone(), l.output.clone(), l.layer.stages.len()))
            .collect();
        let expected: Vec<(String, String, usize)> = spec["layers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| {
                (
                    l["input"].as_str().unwrap().to_string(),
                    l["output"].as_str().unwrap().to_string(),
                    l["stages"].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(found, expected, "{name}: layers (input, output, stages)");
        assert_eq!(
            imported.skipped_line().unwrap_or_default(),
            spec["skipped"].as_str().unwrap(),
            "{name}: skipped nodes"
        );
        assert!(imported.notes.is_empty(), "{name}: {:?}", imported.notes);

        let values = convjit_npy::read_npz(fixtures().join(format!("{name}.npz"))).unwrap();
        for (i, l) in imported.layers.iter().enumerate() {
            let what = format!(
                "{name}: layer {} ('{}' -> '{}')",
                l.layer.name, l.input, l.output
            );
            let weights = imported
                .layer_weights(i)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let (input, batch) = nhwc(values.get(&l.input).unwrap());
            let (want, _) = nhwc(values.get(&l.output).unwrap());
            let interp = convjit_ir::interpret(&l.layer, &weights, &input, batch).unwrap();
            worst = worst.max(check(&format!("{what}, interpreter"), &interp, &want));
            for backend in Backend::available() {
                let options = JitOptions {
                    backend,
                    ..JitOptions::default()
                };
                let kernel = Kernel::compile_with(&l.layer, &weights, &options)
                    .unwrap_or_else(|e| panic!("{what}: {e}"));
                let got = kernel.run_alloc(&input, batch).unwrap();
                worst = worst.max(check(&format!("{what}, jit {backend}"), &got, &want));
            }
            layers_run += 1;
        }
    }
    println!("{layers_run} layers; worst |convjit - onnxruntime| / max |output| = {worst:e}");
}

#[test]
fn refused_models_say_why() {
    let manifest = manifest();
    for (name, message) in manifest["refused"].as_object().unwrap() {
        let bytes = std::fs::read(fixtures().join(format!("{name}.onnx"))).unwrap();
        let e = import(bytes, &Options::default())
            .err()
            .unwrap_or_else(|| panic!("{name} imported"));
        let want = message.as_str().unwrap();
        assert!(e.to_string().contains(want), "{name}: '{e}' lacks '{want}'");
    }
}
