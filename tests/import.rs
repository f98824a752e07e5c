//! `convjit import` end to end: files written (and only when everything
//! succeeds), the summary, the imported layers running under `convjit run`
//! to ONNX Runtime's values, and every refusal's message and exit status.
//! The models are convjit-onnx's fixtures (`crates/onnx/tests/fixtures/`,
//! made by its `make_fixtures.py`).

use convjit::npy;
use std::path::{Path, PathBuf};
use std::process::Output;

fn convjit(dir: &Path, args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap()
}

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/onnx/tests/fixtures")
        .join(name)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A scratch directory holding a copy of the fixture `model`.
fn scratch(model: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture(model), dir.path().join(model)).unwrap();
    dir
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

/// Exit status `status`, stderr containing each of `words`, and no file
/// but `keep` left in `dir`.
fn refused(dir: &Path, args: &[&str], status: i32, words: &[&str], keep: &[&str]) {
    let o = convjit(dir, args);
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(status), "{args:?}: {err}");
    for w in words {
        assert!(err.contains(w), "{args:?}: '{w}' not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(files(dir), keep, "{args:?}: files left behind");
}

#[test]
fn a_model_imports_checks_and_runs_to_onnxruntimes_values() {
    let dir = scratch("resnet.onnx");
    let o = convjit(dir.path(), &["import", "resnet.onnx"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("resnet.onnx: 3 layers, 7 of 7 Conv nodes\n"),
        "{out}"
    );
    assert!(out.contains("skipped: Relu x2, Add x1\n"), "{out}");
    assert!(out.contains("('x' -> 'add1')  resnet.c1.npz"), "{out}");
    assert_eq!(
        files(dir.path()),
        [
            "resnet.c1.npz",
            "resnet.conv",
            "resnet.d1.npz",
            "resnet.down.npz",
            "resnet.onnx"
        ]
    );
    let o = convjit(dir.path(), &["check", "resnet.conv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("layer c1: 8x8x32 -> 8x8x32, 3 stages"),
        "{}",
        stdout(&o)
    );

    // The bottleneck with its residual, on ONNX Runtime's input, through
    // `convjit run` with the imported weights.
    let values = npy::read_npz(fixture("resnet.npz")).unwrap();
    let nchw_to_nhwc = |a: &npy::Array| {
        let [n, c, h, w] = a.shape[..] else { panic!() };
        let mut v = vec![0.0; a.data.len()];
        for i in 0..n * c * h * w {
            let (b, ch, y, x) = (i / (c * h * w), i / (h * w) % c, i / w % h, i % w);
            v[((b * h + y) * w + x) * c + ch] = a.data[i];
        }
        (vec![n, h, w, c], v)
    };
    let (shape, input) = nchw_to_nhwc(values.get("x").unwrap());
    npy::write_npy(dir.path().join("in.npy"), &shape, &input).unwrap();
    let o = convjit(
        dir.path(),
        &[
            "run",
            "resnet.conv",
            "--layer",
            "c1",
            "--weights",
            "resnet.c1.npz",
            "--input",
            "in.npy",
            "--output",
            "out.npy",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let got = npy::read_npy(dir.path().join("out.npy")).unwrap();
    let (shape, want) = nchw_to_nhwc(values.get("add1").unwrap());
    assert_eq!(got.shape, shape);
    let worst = got
        .data
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(worst < 1e-4, "|convjit run - onnxruntime| = {worst}");
}

#[test]
fn outputs_go_where_asked_and_one_layer_gets_one_archive() {
    let dir = scratch("symbolic.onnx");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let o = convjit(
        dir.path(),
        &[
            "import",
            "symbolic.onnx",
            "-o",
            "out/s.conv",
            "--weights",
            "out/w.npz",
            "--input-shape",
            "5x7x3",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(files(&dir.path().join("out")), ["s.conv", "w.npz"]);
    let text = std::fs::read_to_string(dir.path().join("out/s.conv")).unwrap();
    assert!(text.contains("# weights: w.npz\n"), "{text}");
    assert!(text.contains("  input 5x7x3\n"), "{text}");
    assert!(
        text.contains("c: conv 3x3 -> 4, pad same, bias, relu"),
        "{text}"
    );
    let o = convjit(dir.path(), &["run", "out/s.conv", "--weights", "out/w.npz"]);
    assert!(o.status.success(), "{}", stderr(&o));
}

#[test]
fn a_symbolic_input_needs_its_shape() {
    let dir = scratch("symbolic.onnx");
    refused(
        dir.path(),
        &["import", "symbolic.onnx"],
        1,
        &[
            "symbolic.onnx: error: no convolution could be imported (1 Conv node); nothing written",
            "note: node 'c' (Conv) not imported: its input 'x' has shape [?, 3, ?, ?]",
            "--input-shape HxWxC",
        ],
        &["symbolic.onnx"],
    );
    // --verbose: one note per node (here the same one).
    refused(
        dir.path(),
        &["import", "symbolic.onnx", "--verbose"],
        1,
        &["note: node 'c' (Conv) not imported: its input 'x' has shape [?, 3, ?, ?]"],
        &["symbolic.onnx"],
    );
    refused(
        dir.path(),
        &["import", "symbolic.onnx", "--input-shape", "5x7x4"],
        1,
        &["symbolic.onnx: error: --input-shape 5x7x4 does not fit input 'x' of shape [?, 3, ?, ?]"],
        &["symbolic.onnx"],
    );
    refused(
        dir.path(),
        &["import", "symbolic.onnx", "--input-shape", "5x7"],
        2,
        &["HxWxC"],
        &["symbolic.onnx"],
    );
}

#[test]
fn bad_models_are_refused_and_nothing_is_written() {
    let dir = scratch("mbv2.onnx");
    let p = |n: &str| dir.path().join(n);
    let model = std::fs::read(p("mbv2.onnx")).unwrap();
    std::fs::write(p("truncated.onnx"), &model[..model.len() / 2]).unwrap();
    std::fs::write(p("empty.onnx"), b"").unwrap();
    std::fs::write(
        p("text.onnx"),
        b"layer a {\n  input 4x4x3\n  p: pointwise 8\n}\n",
    )
    .unwrap();
    for bad in ["external_data.onnx", "bad_auto_pad.onnx", "bad_group.onnx"] {
        std::fs::copy(fixture(bad), p(bad)).unwrap();
    }
    let all = files(dir.path());
    let keep: Vec<&str> = all.iter().map(String::as_str).collect();
    let cases: &[(&str, &[&str])] = &[
        ("truncated.onnx", &["truncated.onnx: error: not a valid ONNX model (truncated, or not ONNX at all)"]),
        ("empty.onnx", &["empty.onnx: error: not an ONNX model: it has no ir_version"]),
        ("text.onnx", &["text.onnx: error: not"]),
        ("missing.onnx", &["missing.onnx: error: cannot read"]),
        (
            "external_data.onnx",
            &["external_data.onnx: error: tensor 'y_w' keeps its data in an external file ('external_data.bin')"],
        ),
        (
            "bad_auto_pad.onnx",
            &["bad_auto_pad.onnx: error: node 'c' (Conv): auto_pad 'SAME_MIDDLE' is not supported"],
        ),
        ("bad_group.onnx", &["bad_group.onnx: error: node 'c' (Conv): group 4 does not fit 6 input channels"]),
    ];
    for (model, words) in cases {
        refused(dir.path(), &["import", model], 1, words, &keep);
        refused(
            dir.path(),
            &["import", model, "-o", "x.conv", "--weights", "x.npz"],
            1,
            words,
            &keep,
        );
    }
    refused(
        dir.path(),
        &["import", "mbv2.onnx", "-o", "mbv2.onnx"],
        2,
        &["would overwrite the model"],
        &keep,
    );
    refused(
        dir.path(),
        &["import", "mbv2.onnx", "-o", "a.x", "--weights", "a.x"],
        2,
        &["the same file"],
        &keep,
    );
    refused(
        dir.path(),
        &["import", "mbv2.onnx", "-o", "no/such/dir/m.conv"],
        1,
        &["no/such/dir/m.conv: error: cannot write"],
        &keep,
    );
}

#[test]
fn an_output_colliding_with_a_layers_archive_is_a_usage_error() {
    // -o names the archive of layer d1 (known only once the model is read).
    let dir = scratch("resnet.onnx");
    refused(
        dir.path(),
        &["import", "resnet.onnx", "-o", "resnet.d1.npz"],
        2,
        &["resnet.d1.npz", "name the same file"],
        &["resnet.onnx"],
    );
}

#[test]
fn a_failed_write_leaves_earlier_files_untouched() {
    // The .conv is written, then the archives: a directory where an
    // archive should go fails the write; the .conv must not appear either.
    let dir = scratch("resnet.onnx");
    std::fs::create_dir(dir.path().join("resnet.d1.npz")).unwrap();
    let o = convjit(dir.path(), &["import", "resnet.onnx"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("resnet.d1.npz: error: cannot write"),
        "{}",
        stderr(&o)
    );
    assert_eq!(files(dir.path()), ["resnet.d1.npz", "resnet.onnx"]);
}

/// Names with a line break and a terminal escape sequence (ESC) in the
/// model: the summary shows them escaped (`\n`, `\u{1b}`), one line per
/// layer; the `.conv` comments replace them by `?`.
#[test]
fn control_characters_in_names_are_escaped_in_the_summary() {
    use convjit_onnx::proto::tensor_proto::DataType;
    use convjit_onnx::proto::{tensor_shape_proto, type_proto, TypeProto};
    use convjit_onnx::proto::{
        GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TensorProto, TensorShapeProto,
        ValueInfoProto,
    };
    use prost::Message;
    let (x, y) = ("x\n\u{1b}[2J", "y\r\u{1b}]0;title\u{7}");
    let dim = |v| tensor_shape_proto::Dimension {
        value: Some(tensor_shape_proto::dimension::Value::DimValue(v)),
        ..Default::default()
    };
    let value = |name: &str| ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(DataType::Float as i32),
                shape: Some(TensorShapeProto {
                    dim: vec![dim(1), dim(3), dim(4), dim(4)],
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    };
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(13),
        }],
        graph: Some(GraphProto {
            node: vec![
                NodeProto {
                    input: vec![x.into(), "w".into()],
                    output: vec![y.into()],
                    name: Some("c\nlayer x {".into()),
                    op_type: Some("Conv".into()),
                    ..Default::default()
                },
                NodeProto {
                    input: vec![y.into()],
                    output: vec!["z".into()],
                    op_type: Some("Evil\u{1b}[1m".into()),
                    ..Default::default()
                },
            ],
            initializer: vec![TensorProto {
                name: Some("w".into()),
                dims: vec![2, 3, 1, 1],
                data_type: Some(DataType::Float as i32),
                float_data: vec![0.5; 6],
                ..Default::default()
            }],
            input: vec![value(x)],
            output: vec![ValueInfoProto {
                name: Some("z".into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("m.onnx"), model.encode_to_vec()).unwrap();
    let o = convjit(dir.path(), &["import", "m.onnx"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(!out.contains(['\u{1b}', '\r', '\u{7}']), "{out:?}");
    assert!(
        out.contains("('x\\n\\u{1b}[2J' -> 'y\\r\\u{1b}]0;title\\u{7}')"),
        "{out}"
    );
    assert!(out.contains("skipped: Evil\\u{1b}[1m x1"), "{out}");
    assert_eq!(out.lines().count(), 4, "{out}");
    let text = std::fs::read_to_string(dir.path().join("m.conv")).unwrap();
    assert!(!text.contains('\u{1b}'), "{text}");
}
