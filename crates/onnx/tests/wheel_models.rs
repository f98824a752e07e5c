//! The six CNNs of the `onnx` wheel (`backend/test/data/light`: ResNet-50,
//! ShuffleNet, SqueezeNet, VGG-19, Inception v2, DenseNet-121), whose
//! weights are computed in the graph (`ConstantOfShape`), import with
//! their chains whole, and every imported layer matches ONNX Runtime.
//!
//! `wheel_models.py prepare` finds the models and writes each with its
//! weights multiplied by random factors (broadcast `Mul`s the folder
//! evaluates: every weight and channel then differs); both the original
//! and that variant are imported and must give the layers and skipped
//! nodes below. `wheel_models.py run` then has ONNX Runtime compute every
//! layer's input and output tensor (batch 1, 224x224) and each layer is
//! compiled (the JIT, the host's widest generator) and run on ONNX
//! Runtime's input. The interpreter (the oracle, checked against the JIT
//! by the JIT's own tests) runs the cheapest layer of each model only, if
//! small: its f64 sums over whole networks would take most of a minute.

mod common;

use common::{check, nhwc};
use convjit_jit::Kernel;
use convjit_onnx::{import, read_model, Import, Options};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Per model: layers, and the nodes left out (everything but the Relus
/// after a residual the language cannot hold, ShuffleNet's channel
/// shuffles, DenseNet's pre-activation BatchNorm/Mul/Add/Relu before each
/// conv, pooling, concatenation and the classifier).
const EXPECTED: &[(&str, usize, &str)] = &[
    (
        "resnet50",
        21,
        "skipped: MaxPool x1, Sum x4, Relu x16, AveragePool x1, Reshape x1, Gemm x1, Softmax x1",
    ),
    (
        "shufflenet",
        33,
        "skipped: MaxPool x1, Reshape x33, Transpose x16, AveragePool x4, Concat x3, Relu x16, \
         Sum x13, Gemm x1, Softmax x1",
    ),
    (
        "squeezenet",
        26,
        "skipped: MaxPool x3, Concat x8, Dropout x1, GlobalAveragePool x1, Softmax x1",
    ),
    (
        "vgg19",
        5,
        "skipped: MaxPool x5, Reshape x1, Gemm x3, Relu x2, Dropout x2, Softmax x1",
    ),
    (
        "inception_v2",
        38,
        "skipped: MaxPool x5, AveragePool x8, Concat x10, Reshape x1, Gemm x1, Softmax x1",
    ),
    (
        "densenet121",
        63,
        "skipped: MaxPool x1, BatchNormalization x62, Mul x62, Add x62, Relu x62, Concat x58, \
         AveragePool x3, GlobalAveragePool x1",
    ),
];

/// The interpreter runs a model's cheapest layer if it has at most this
/// many multiply-adds (VGG-19's has 1.8 G: none of its layers).
const INTERPRETED_MACS: u64 = 100_000_000;

fn python(args: &[&str]) -> String {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wheel_models.py");
    let out = Command::new("python3")
        .arg(&script)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("python3 {}: {e}", script.display()));
    assert!(
        out.status.success(),
        "python3 wheel_models.py {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn import_file(path: &Path) -> Import {
    let bytes = read_model(path).unwrap_or_else(|e| panic!("{e}"));
    import(bytes, &Options::default()).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The layers as (input, output, stages).
fn layers(imported: &Import) -> Vec<(String, String, usize)> {
    imported
        .layers
        .iter()
        .map(|l| (l.input.clone(), l.output.clone(), l.layer.stages.len()))
        .collect()
}

#[test]
#[cfg_attr(
    no_onnxruntime,
    ignore = "needs python3 with numpy, onnx and onnxruntime: pip install numpy onnx onnxruntime"
)]
fn wheel_models_import_whole_and_match_onnxruntime() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().to_str().unwrap();
    let wheel = PathBuf::from(python(&["prepare", out]).trim());

    let mut imported = Vec::new();
    for &(name, n_layers, skipped) in EXPECTED {
        let original = import_file(&wheel.join(format!("light_{name}.onnx")));
        let taken: usize = original.layers.iter().map(|l| l.layer.stages.len()).sum();
        assert_eq!(
            (original.layers.len(), taken),
            (n_layers, original.conv_nodes),
            "{name}: layers, and Conv nodes taken (notes: {:?})",
            original.notes
        );
        assert_eq!(
            original.skipped_line().unwrap_or_default(),
            skipped,
            "{name}"
        );
        assert!(original.notes.is_empty(), "{name}: {:?}", original.notes);

        let random = import_file(&dir.path().join(format!("{name}.onnx")));
        assert_eq!(layers(&random), layers(&original), "{name}: randomized");
        assert_eq!(random.skipped_line().unwrap_or_default(), skipped, "{name}");

        let mut tensors: Vec<String> = Vec::new();
        let mut seen = HashSet::new();
        for l in &random.layers {
            for t in [&l.input, &l.output] {
                if seen.insert(t.clone()) {
                    tensors.push(t.clone());
                }
            }
        }
        std::fs::write(
            dir.path().join(format!("{name}.tensors")),
            tensors.join("\n"),
        )
        .unwrap();
        imported.push((name, random, tensors));
    }
    python(&["run", out]);

    let (mut total, mut worst) = (0, 0f32);
    for (name, model, tensors) in &imported {
        let values = convjit_npy::read_npz(dir.path().join(format!("{name}.npz"))).unwrap();
        let value = |t: &str| {
            let i = tensors.iter().position(|x| x == t).unwrap();
            nhwc(values.get(&format!("t{i}")).unwrap())
        };
        let mut model_worst = 0f32;
        let cheapest = (0..model.layers.len())
            .min_by_key(|&i| model.layers[i].layer.macs())
            .filter(|&i| model.layers[i].layer.macs() <= INTERPRETED_MACS);
        for (i, l) in model.layers.iter().enumerate() {
            let what = format!(
                "{name}: layer {} ('{}' -> '{}')",
                l.layer.name, l.input, l.output
            );
            let weights = model
                .layer_weights(i)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let ((input, batch), (want, _)) = (value(&l.input), value(&l.output));
            let kernel = Kernel::compile_with(&l.layer, &weights, &Default::default())
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let got = kernel.run_alloc(&input, batch).unwrap();
            model_worst = model_worst.max(check(&what, &got, &want));
            if Some(i) == cheapest {
                let interp = convjit_ir::interpret(&l.layer, &weights, &input, batch).unwrap();
                model_worst =
                    model_worst.max(check(&format!("{what}, interpreter"), &interp, &want));
            }
        }
        println!(
            "{name}: {} layers, {} stages; worst |convjit - onnxruntime| / max |output| = {model_worst:e}",
            model.layers.len(),
            model.layers.iter().map(|l| l.layer.stages.len()).sum::<usize>()
        );
        total += model.layers.len();
        worst = worst.max(model_worst);
    }
    println!("{total} layers run; worst {worst:e}");
}
