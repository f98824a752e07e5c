//! The `convjit` binary end to end: outputs, exit statuses, and that a
//! failed run leaves no output file behind.

#[path = "common/oracle.rs"]
mod oracle;

use convjit::npy::{self, Array};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn convjit(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn plan_reproduces_the_textbook_macs() {
    let o = convjit(&["plan", "examples/textbook.conv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for n in ["1,228,800", "4,800", "49,152", "53,952"] {
        assert!(text.contains(n), "{n} missing from:\n{text}");
    }
    let o = convjit(&["plan", "examples/textbook.conv", "--json"]);
    let plans: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(plans.len(), 2);
    assert_eq!(plans[0]["layer"], "textbook_standard");
    assert_eq!(plans[0]["macs"], 1_228_800);
    assert_eq!(plans[1]["macs"], 53_952);
    let stage_macs: Vec<_> = plans[1]["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["macs"].as_u64().unwrap())
        .collect();
    assert_eq!(stage_macs, [4_800, 49_152]);
    let o = convjit(&[
        "plan",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--json",
    ]);
    let one: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(one["output"], serde_json::json!([8, 8, 256]));
}

#[test]
fn every_example_checks() {
    let mut n = 0;
    for e in std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|e| e == "conv") {
            let o = convjit(&["check", s(&p)]);
            assert!(o.status.success(), "{}: {}", p.display(), stderr(&o));
            assert!(stdout(&o).starts_with("layer "));
            n += 1;
        }
    }
    assert!(n >= 5);
}

#[test]
fn the_mobilenet_v2_example_is_the_whole_body_as_a_chain() {
    use convjit::{Activation, Shape};
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/mobilenet_v2.conv");
    let layers = convjit::load_layers(&path).unwrap();
    // The stem, the 17 inverted-residual blocks, the last 1x1.
    assert_eq!(layers.len(), 19);
    assert_eq!(layers[0].input, Shape::new(224, 224, 3));
    for pair in layers.windows(2) {
        assert_eq!(
            pair[1].input,
            pair[0].output(),
            "{} does not take {}'s output",
            pair[1].name,
            pair[0].name
        );
    }
    assert_eq!(layers[18].output(), Shape::new(7, 7, 1280));
    // Blocks 2 and 3 under the names tests and docs use.
    assert_eq!(layers[3].name, "mbv2_inverted_residual");
    assert_eq!(layers[4].name, "mbv2_inverted_residual_s2");
    // Stride 1 with as many channels out as in: the skip connection, on
    // the projection (block b is layer b + 1).
    let residual: Vec<usize> = (0..layers.len())
        .filter(|&i| layers[i].stages.iter().any(|s| s.residual))
        .collect();
    assert_eq!(residual, [3, 5, 6, 8, 9, 10, 12, 13, 15, 16]);
    for (li, l) in layers.iter().enumerate() {
        let last = l.stages.len() - 1;
        for (i, s) in l.stages.iter().enumerate() {
            assert!(
                s.bias_key.is_some(),
                "{}.{}: BatchNorm folds into a bias",
                l.name,
                s.name
            );
            // ReLU6 everywhere but the linear projections.
            let linear = s.name == "project";
            let want = if linear {
                Activation::None
            } else {
                Activation::Relu6
            };
            assert_eq!(s.activation, want, "{}.{}", l.name, s.name);
            assert_eq!(
                s.residual,
                i == last && residual.contains(&li),
                "{}.{}",
                l.name,
                s.name
            );
        }
    }
    // 3x3 at stride 2 padded as Keras does (ZeroPadding2D ((0,1),(0,1)), valid).
    let strided: Vec<(&str, [usize; 4])> = layers
        .iter()
        .flat_map(|l| l.stages.iter().map(move |s| (l, s)))
        .filter(|(_, s)| s.stride == [2, 2])
        .map(|(l, s)| {
            let p = s.padding;
            (l.name.as_str(), [p.top, p.bottom, p.left, p.right])
        })
        .collect();
    assert_eq!(
        strided.len(),
        5,
        "the stem and blocks 1, 3, 6, 13: {strided:?}"
    );
    assert!(
        strided.iter().all(|(_, p)| *p == [0, 1, 0, 1]),
        "{strided:?}"
    );
    // Multiply-accumulates: the stem 10,838,016, the blocks 268,585,856,
    // the last 1x1 20,070,400 (the paper's 300M adds the classifier's 1.28M).
    let macs: Vec<u64> = layers.iter().map(|l| l.macs()).collect();
    assert_eq!(macs[0], 10_838_016);
    assert_eq!(macs[3], 25_740_288);
    assert_eq!(macs[18], 20_070_400);
    assert_eq!(macs.iter().sum::<u64>(), 299_494_272);
}

#[test]
fn bench_times_a_copy_of_the_input_where_the_output_is_as_large() {
    // The memory roof at the layer's own sizes: a depthwise layer's input
    // and output are the same size; the textbook layers' are not.
    let dir = tempfile::tempdir().unwrap();
    let dw = dir.path().join("dw.conv");
    std::fs::write(
        &dw,
        "layer d { input 16x16x32; d: depthwise 3x3, pad same }\n",
    )
    .unwrap();
    let report = |file: &str, extra: &[&str]| {
        let args = [
            "bench",
            file,
            "--seconds",
            "0.02",
            "--no-interp",
            "--no-baselines",
        ];
        let o = convjit(&[&args[..], extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let json: serde_json::Value = serde_json::from_str(report(s(&dw), &["--json"]).trim()).unwrap();
    assert!(json["copy_io_us"].as_f64().unwrap() > 0.0, "{json}");
    let variants = json["results"].as_array().unwrap();
    assert!(variants.iter().all(|r| r["variant"] != "copy-io"), "{json}");
    let text = report(s(&dw), &[]);
    assert!(text.contains("copy of the input to the output: "), "{text}");
    let json = report(
        "examples/textbook.conv",
        &["--json", "--layer", "textbook_separable"],
    );
    let json: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert!(json["copy_io_us"].is_null(), "{json}");
}

#[test]
fn bench_sums_the_layers_of_a_file() {
    // Two layers: the table ends with their sum; --json adds it only when
    // asked (--total), as a line without a "layer" key.
    let args = [
        "bench",
        "examples/textbook.conv",
        "--seconds",
        "0.02",
        "--no-interp",
        "--no-baselines",
    ];
    let o = convjit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let total = text.split("total over 2 layers: 1,282,752 MACs").nth(1);
    assert!(total.is_some_and(|t| t.contains("\n  jit ")), "{text}");
    let lines = |extra: &[&str]| -> Vec<serde_json::Value> {
        let o = convjit(&[&args[..], &["--json"], extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    };
    let plain = lines(&[]);
    assert_eq!(plain.len(), 2);
    assert!(plain.iter().all(|r| r["layer"].is_string()));
    let with = lines(&["--total"]);
    assert_eq!(with.len(), 3);
    let (layers, sum) = (&with[..2], &with[2]);
    assert_eq!(sum["total"], true);
    assert!(sum.get("layer").is_none(), "{sum}");
    assert_eq!(sum["macs"], 1_282_752);
    assert_eq!(
        sum["layers"],
        serde_json::json!(["textbook_standard", "textbook_separable"])
    );
    let median = |r: &serde_json::Value, name: &str| {
        r["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["variant"] == name)
            .map(|v| v["median_us"].as_f64().unwrap())
    };
    // Every variant that ran on both layers, summed (FMA loops are not
    // layers' times); the jit's first.
    let names: Vec<&str> = sum["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["variant"].as_str().unwrap())
        .collect();
    assert_eq!(names[0], "jit");
    assert!(names.iter().all(|n| !n.ends_with("-peak")), "{names:?}");
    for name in names {
        // jit-unfused is timed where the planner fuses; elsewhere the
        // planned kernel is the unfused one.
        let want: f64 = layers
            .iter()
            .map(|r| {
                median(r, name)
                    .or_else(|| (name == "jit-unfused").then(|| median(r, "jit")).flatten())
                    .unwrap()
            })
            .sum();
        let got = median(sum, name).unwrap();
        assert!((got - want).abs() < 0.02, "{name}: {got} vs {want}");
    }
    // These two layers do not chain (the second does not take the
    // first's output): no network to run one after another.
    assert!(sum.get("chained").is_none(), "{sum}");
    // --total without --json is a usage error.
    let o = convjit(&[&args[..], &["--total"]].concat());
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // Layers that chain are also timed one after another, as a network.
    let dir = tempfile::tempdir().unwrap();
    let net = dir.path().join("net.conv");
    std::fs::write(
        &net,
        "layer a { input 8x8x4; c: pointwise 8, relu }\n\
         layer b { input 8x8x8; d: depthwise 3x3, stride 2, pad same }\n",
    )
    .unwrap();
    let o = convjit(&[
        "bench",
        s(&net),
        "--seconds",
        "0.02",
        "--no-interp",
        "--no-baselines",
        "--json",
        "--total",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let sum: serde_json::Value = serde_json::from_str(stdout(&o).lines().last().unwrap()).unwrap();
    let chained = sum["chained"].as_array().unwrap();
    assert_eq!(chained[0]["variant"], "jit", "{sum}");
    assert!(chained
        .iter()
        .all(|v| v["median_us"].as_f64().unwrap() > 0.0));
}

/// Writes a case's `.conv`, input and weights into `dir`.
fn write_case(dir: &Path, c: &oracle::Case) -> (PathBuf, PathBuf, PathBuf) {
    let conv = dir.join("layer.conv");
    std::fs::write(&conv, &c.text).unwrap();
    let i = c.layer.input;
    let input = dir.join("in.npy");
    npy::write_npy(&input, &[c.batch, i.h, i.w, i.c], &c.input).unwrap();
    let weights = dir.join("w.npz");
    let arrays = c.weights.to_arrays(&c.layer);
    let refs: Vec<(&str, &Array)> = arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    npy::write_npz(&weights, &refs).unwrap();
    (conv, input, weights)
}

#[test]
fn run_matches_the_reference_vectors_through_files() {
    let dir = tempfile::tempdir().unwrap();
    for (c, engine) in oracle::cases()
        .into_iter()
        .flat_map(|c| [(c.clone(), "interp"), (c, "jit")])
    {
        let (conv, input, weights) = write_case(dir.path(), &c);
        let out = dir.path().join("out.npy");
        let o = convjit(&[
            "run",
            s(&conv),
            "--input",
            s(&input),
            "--weights",
            s(&weights),
            "--output",
            s(&out),
            "--engine",
            engine,
        ]);
        assert!(o.status.success(), "{} ({engine}): {}", c.name, stderr(&o));
        let got = npy::read_npy(&out).unwrap();
        let so = c.layer.output();
        assert_eq!(got.shape, [c.batch, so.h, so.w, so.c], "{}", c.name);
        let (diff, at) = oracle::max_abs_diff(&got.data, &c.expected);
        assert!(
            diff <= c.atol,
            "{} ({engine}): {diff} at {at} > {}",
            c.name,
            c.atol
        );
    }
}

#[test]
fn the_jit_is_the_default_engine_and_agrees_with_the_interpreter() {
    let args = [
        "run",
        "examples/mobilenet_v2.conv",
        "--layer",
        "mbv2_inverted_residual_s2",
        "--batch",
        "2",
    ];
    let jit = convjit(&args);
    assert!(jit.status.success(), "{}", stderr(&jit));
    let interp = convjit(&[&args[..], &["--engine", "interp"]].concat());
    // The summaries print six decimals; the engines agree far closer.
    assert_eq!(stdout(&jit), stdout(&interp));
}

#[test]
fn bench_reports_jit_and_interpreter_as_json() {
    let o = convjit(&[
        "bench",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--json",
        "--seconds",
        "0.05",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(r["layer"], "textbook_separable");
    assert_eq!(r["macs"], 53_952);
    let variants: Vec<_> = r["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["variant"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(variants[0], "jit");
    assert!(variants.contains(&"interp".to_string()), "{variants:?}");
    assert!(variants.contains(&"naive".to_string()), "{variants:?}");
    for v in r["results"].as_array().unwrap() {
        assert!(v["median_us"].as_f64().unwrap() > 0.0);
        assert!(v["gflops"].as_f64().unwrap() > 0.0);
    }
    assert!(r["max_abs_diff_jit_vs_interp"].as_f64().unwrap() < 1e-4);
    // Every code generator the host runs appears, the chosen one as "jit",
    // the others as "jit-NAME", each checked against the interpreter.
    let chosen = r["backend"].as_str().unwrap();
    let available = r["backends_available"].as_array().unwrap();
    assert!(available.iter().any(|b| b == chosen), "{available:?}");
    for b in available.iter().map(|b| b.as_str().unwrap()) {
        let name = format!("jit-{b}");
        assert_eq!(
            variants.contains(&name),
            b != chosen,
            "{name}: {variants:?}"
        );
    }
    // A FMA loop per vector width the host has; every row is a share of
    // the widest one measured (which is itself 100%).
    let notes: Vec<&str> = r["notes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    let mut widest = None;
    for bits in [128, 256, 512] {
        let row = format!("fma{bits}-peak");
        let measured = r[format!("measured_peak_{bits}_gflops")].as_f64();
        assert_eq!(variants.contains(&row), measured.is_some(), "{row}");
        let noted = notes.iter().any(|n| n.starts_with(&row));
        assert_eq!(noted, measured.is_none(), "{row}: {notes:?}");
        if measured.is_some() {
            widest = Some(bits);
        }
    }
    assert_eq!(r["widest_measured_peak_bits"].as_u64(), widest);
    for v in r["results"].as_array().unwrap() {
        let name = v["variant"].as_str().unwrap();
        if let Some(bits) = widest {
            let pct = v["pct_widest_measured_peak"].as_f64().unwrap();
            if name == format!("fma{bits}-peak") {
                assert_eq!(pct, 100.0);
            }
        }
        if name.starts_with("jit") || ["naive", "sse128", "avx256", "gemm"].contains(&name) {
            let d = v["max_abs_diff_vs_interp"].as_f64().unwrap();
            assert!(d < 1e-4, "{name}: {d}");
        }
    }
    // The 256-bit baseline runs where the CPU has AVX2 and FMA, and a note
    // says why where it does not.
    let avx256 = variants.contains(&"avx256".to_string());
    assert_ne!(avx256, notes.iter().any(|n| n.starts_with("avx256")));
}

#[test]
fn run_without_data_files_uses_seeded_random_data() {
    let args = [
        "run",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--engine",
        "interp",
    ];
    let a = convjit(&args);
    assert!(a.status.success(), "{}", stderr(&a));
    assert!(
        stdout(&a).contains("output [1, 8, 8, 256]"),
        "{}",
        stdout(&a)
    );
    assert!(stderr(&a).contains("seeded random weights"));
    // Same seed, same numbers; another seed, others.
    assert_eq!(stdout(&a), stdout(&convjit(&args)));
    let other = convjit(&[&args[..], &["--seed", "9", "--batch", "2"]].concat());
    assert!(stdout(&other).contains("output [2, 8, 8, 256]"));
    assert_ne!(stdout(&a), stdout(&other));
}

/// A small layer with files to break, one at a time.
struct Fixture {
    dir: tempfile::TempDir,
    conv: PathBuf,
    input: PathBuf,
    weights: PathBuf,
    out: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("l.conv");
    std::fs::write(
        &conv,
        "layer l {\n  input 5x4x3\n  dw: depthwise 3x3, pad same, bias\n  pw: pointwise 2\n}\n",
    )
    .unwrap();
    let input = dir.path().join("in.npy");
    npy::write_npy(&input, &[1, 5, 4, 3], &[0.5; 60]).unwrap();
    let weights = dir.path().join("w.npz");
    write_weights(
        &weights,
        &[
            ("dw.weight", vec![3, 3, 3, 1]),
            ("dw.bias", vec![3]),
            ("pw.weight", vec![3, 2]),
        ],
    );
    let out = dir.path().join("out.npy");
    Fixture {
        conv,
        input,
        weights,
        out,
        dir,
    }
}

fn write_weights(path: &Path, arrays: &[(&str, Vec<usize>)]) {
    let arrays: Vec<(&str, Array)> = arrays
        .iter()
        .map(|(k, shape)| {
            (
                *k,
                Array::new(shape.clone(), vec![0.25; shape.iter().product()]),
            )
        })
        .collect();
    let refs: Vec<(&str, &Array)> = arrays.iter().map(|(k, a)| (*k, a)).collect();
    npy::write_npz(path, &refs).unwrap();
}

impl Fixture {
    fn run(&self, extra: &[&str]) -> Output {
        let base = [
            "run",
            s(&self.conv),
            "--input",
            s(&self.input),
            "--weights",
            s(&self.weights),
            "--output",
            s(&self.out),
            "--engine",
            "interp",
        ];
        convjit(&[&base[..], extra].concat())
    }

    /// Runs, expects failure with `status`, a message containing every
    /// one of `needles`, and no output file.
    fn fails(&self, status: i32, needles: &[&str]) {
        let o = self.run(&[]);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(status), "{err}");
        for n in needles {
            assert!(err.contains(n), "{n:?} not in: {err}");
        }
        assert!(!err.contains("panicked"), "{err}");
        assert!(!self.out.exists(), "output left behind");
        let left: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !["l.conv", "in.npy", "w.npz"].contains(&n.as_str()))
            .collect();
        assert!(left.is_empty(), "left behind: {left:?}");
    }
}

#[test]
fn the_fixture_runs() {
    let f = fixture();
    let o = f.run(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(npy::read_npy(&f.out).unwrap().shape, [1, 5, 4, 2]);
}

#[test]
fn bad_weights_name_the_key_and_shapes() {
    let f = fixture();
    write_weights(
        &f.weights,
        &[("dw.weight", vec![3, 3, 3, 1]), ("pw.weight", vec![3, 2])],
    );
    f.fails(1, &["w.npz", "'dw.bias'", "missing", "[3]"]);

    write_weights(
        &f.weights,
        &[
            ("dw.weight", vec![3, 3, 3, 2]),
            ("dw.bias", vec![3]),
            ("pw.weight", vec![3, 2]),
        ],
    );
    f.fails(
        1,
        &[
            "'dw.weight'",
            "expected shape [3, 3, 3, 1]",
            "found [3, 3, 3, 2]",
        ],
    );

    write_weights(
        &f.weights,
        &[
            ("dw.weight", vec![3, 3, 3, 1]),
            ("dw.bias", vec![3]),
            ("pw.weight", vec![3, 2]),
            ("pw.bias", vec![2]),
        ],
    );
    f.fails(1, &["'pw.bias'", "unexpected", "lack the 'bias' option"]);

    write_weights(
        &f.weights,
        &[
            ("dw.weight", vec![3, 3, 3, 1]),
            ("dw.bias", vec![3]),
            ("pw.weight", vec![3, 2]),
        ],
    );
    // A float64 input: patch the dtype in a valid file's header.
    let mut bytes = npy::npy_bytes(&[1, 5, 4, 3], &[0.0; 60]);
    let at = bytes.windows(5).position(|w| w == b"'<f4'").unwrap();
    bytes[at..at + 5].copy_from_slice(b"'<f8'");
    std::fs::write(&f.input, &bytes).unwrap();
    f.fails(1, &["in.npy", "float64", "'<f8'", "float32"]);

    std::fs::write(&f.weights, b"not a zip").unwrap();
    npy::write_npy(&f.input, &[1, 5, 4, 3], &[0.5; 60]).unwrap();
    f.fails(1, &["w.npz", "not a valid .npz"]);
}

#[test]
fn bad_inputs_name_the_file_and_shapes() {
    let f = fixture();
    npy::write_npy(&f.input, &[5, 4, 3], &[0.5; 60]).unwrap();
    f.fails(
        1,
        &["in.npy", "expected float32 [N, 5, 4, 3]", "found [5, 4, 3]"],
    );
    npy::write_npy(&f.input, &[1, 5, 4, 2], &[0.5; 40]).unwrap();
    f.fails(1, &["in.npy", "found [1, 5, 4, 2]"]);
    let full = npy::npy_bytes(&[1, 5, 4, 3], &[0.5; 60]);
    std::fs::write(&f.input, &full[..full.len() - 10]).unwrap();
    f.fails(1, &["in.npy", "truncated"]);
    std::fs::remove_file(&f.input).unwrap();
    f.fails(1, &["in.npy", "cannot read"]);
}

#[test]
fn an_unwritable_output_is_an_error_and_leaves_nothing() {
    let f = fixture();
    let o = convjit(&[
        "run",
        s(&f.conv),
        "--output",
        s(&f.dir.path().join("no/such/dir/out.npy")),
        "--engine",
        "interp",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("out.npy"));
    assert!(!f.dir.path().join("no").exists());
}

#[test]
fn bad_layer_files_and_usage() {
    let f = fixture();
    std::fs::write(
        &f.conv,
        "layer l {\n  input 5x4x3\n  dw: depthwise 3x3, pad sme\n}\n",
    )
    .unwrap();
    f.fails(
        1,
        &[
            "l.conv:3:26: error: unknown padding 'sme'",
            "did you mean 'same'?",
        ],
    );
    std::fs::write(&f.conv, [0xff, 0xfe, b'l']).unwrap();
    f.fails(1, &["l.conv:1:1: error: invalid UTF-8 byte 0xff"]);
    std::fs::remove_file(&f.conv).unwrap();
    f.fails(1, &["l.conv", "cannot read"]);

    let o = convjit(&["run", "examples/textbook.conv", "--engine", "interp"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("textbook_standard, textbook_separable"),
        "{}",
        stderr(&o)
    );
    let o = convjit(&["plan", "examples/textbook.conv", "--layer", "nope"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no layer 'nope'"));
    for bad in [
        &["plan", "examples/textbook.conv", "--bogus"][..],
        &["frobnicate"],
        &["run", "examples/textbook.conv", "--threads", "0"],
        &["run", "examples/textbook.conv", "--engine", "gpu"],
        &[],
    ] {
        let o = convjit(bad);
        assert_eq!(o.status.code(), Some(2), "{bad:?}: {}", stderr(&o));
    }
    assert_eq!(convjit(&["--help"]).status.code(), Some(0));
}

#[test]
fn build_writes_an_object_and_its_header_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let obj = dir.path().join("k.o");
    let o = convjit(&[
        "build",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "-o",
        s(&obj),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let header = std::fs::read_to_string(dir.path().join("k.h")).unwrap();
    assert!(header.contains("convjit_textbook_separable"), "{header}");
    assert_eq!(&std::fs::read(&obj).unwrap()[..4], b"\x7fELF");

    let clif = dir.path().join("k.clif");
    let o = convjit(&[
        "build",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "-o",
        s(&clif),
        "--emit",
        "clif",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(std::fs::read_to_string(&clif).unwrap().contains("function"));

    // Bad arguments: clear errors, nothing written.
    let out = dir.path().join("bad.o");
    for (args, status, needle) in [
        (
            vec!["--target", "riscv64gc-unknown-linux-gnu"],
            2,
            "not supported",
        ),
        (vec!["--target", "nonsense"], 2, "unknown target"),
        (vec!["--layer", "nope"], 2, "no layer 'nope'"),
    ] {
        let mut all = vec!["build", "examples/textbook.conv", "-o", s(&out)];
        if !args.contains(&"--layer") {
            all.extend(["--layer", "textbook_separable"]);
        }
        all.extend(args);
        let o = convjit(&all);
        assert_eq!(o.status.code(), Some(status), "{all:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{}", stderr(&o));
        assert!(!out.exists() && !dir.path().join("bad.h").exists());
    }
    let o = convjit(&[
        "build",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "-o",
        s(&dir.path().join("no/dir/k.o")),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("cannot write"));
}

/// `build --cpu` and `--backend` pick the stage functions' generator and
/// the CPU level; the header and the listings say which; conflicting
/// choices are usage errors and leave no file behind.
#[test]
fn build_cpu_and_backend_choose_the_generator() {
    let dir = tempfile::tempdir().unwrap();
    let base = [
        "build",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
    ];
    let x86 = ["--target", "x86_64-unknown-linux-gnu"];
    // The header's comment with its word-wrapped lines joined.
    let header = |obj: &Path| {
        std::fs::read_to_string(obj.with_extension("h"))
            .unwrap()
            .replace("\n * ", " ")
    };
    for (extra, generator, needs) in [
        (&[][..], "avx2", "x86-64-v3"),
        (&["--cpu", "x86-64-v4"], "avx512", "x86-64-v4"),
        (&["--backend", "avx512"], "avx512", "x86-64-v4"),
        (
            &["--cpu", "x86-64-v4", "--backend", "avx2"],
            "avx2",
            "x86-64-v4",
        ),
        (&["--backend", "cranelift"], "cranelift", "x86-64-v3"),
    ] {
        let obj = dir.path().join("k.o");
        let args = [&base[..], &["-o", s(&obj)], &x86, extra].concat();
        let o = convjit(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        let said = format!("stage functions: {generator}, for {needs}");
        assert!(stderr(&o).contains(&said), "{extra:?}: {}", stderr(&o));
        let h = header(&obj);
        let who = match generator {
            "avx2" => "convjit's x86-64 AVX2 generator",
            "avx512" => "convjit's x86-64 AVX-512 generator",
            _ => "All functions: Cranelift",
        };
        assert!(h.contains(who), "{extra:?}: {h}");
        assert!(h.contains(&format!("({needs}).")), "{extra:?}: {h}");
        assert_eq!(&std::fs::read(&obj).unwrap()[..4], b"\x7fELF");
    }

    // Listings: x86 stage functions disassembled, or named in the CLIF.
    let asm = dir.path().join("k.s");
    let args = [
        &base[..],
        &["-o", s(&asm), "--emit", "asm", "--cpu", "x86-64-v4"],
        &x86,
    ]
    .concat();
    let o = convjit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&asm).unwrap();
    assert!(text.contains("; written by convjit's avx512 generator: x86-64 machine code"));
    assert!(text.contains("vfmadd231ps zmm"), "{text}");
    let clif = dir.path().join("k.clif");
    let args = [&base[..], &["-o", s(&clif), "--emit", "clif"], &x86].concat();
    let o = convjit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&clif).unwrap();
    assert!(text.contains("; convjit_textbook_separable_stage0\n; written by convjit's avx2"));
    assert!(
        text.contains("; convjit_textbook_separable\nfunction u0:"),
        "{text}"
    );

    // Usage errors (2): nothing written.
    let out = dir.path().join("bad.o");
    let aarch64 = "aarch64-unknown-linux-gnu";
    for (args, needle) in [
        (
            vec![
                "--target",
                "x86_64-unknown-linux-gnu",
                "--cpu",
                "x86-64-v3",
                "--backend",
                "avx512",
            ],
            "needs x86-64-v4",
        ),
        (
            vec!["--target", aarch64, "--cpu", "x86-64-v4"],
            "for x86_64 targets",
        ),
        (
            vec!["--target", aarch64, "--backend", "avx512"],
            "writes x86-64 code",
        ),
        (vec!["--cpu", "x86-64-v2"], "not a CPU level"),
        (vec!["--backend", "gpu"], "not a code generator"),
    ] {
        let all = [&base[..], &["-o", s(&out)], &args].concat();
        let o = convjit(&all);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
        assert!(!out.exists() && !dir.path().join("bad.h").exists());
    }

    // For this machine, a generator the CPU lacks is wrong input (1); one
    // it has builds.
    for (backend, feature) in [("avx2", "AVX2"), ("avx512", "AVX-512F")] {
        let all = [&base[..], &["-o", s(&out), "--backend", backend]].concat();
        let o = convjit(&all);
        if convjit::Backend::parse(backend).unwrap().host_has() {
            assert!(o.status.success(), "{backend}: {}", stderr(&o));
            let _ = std::fs::remove_file(&out);
            let _ = std::fs::remove_file(out.with_extension("h"));
        } else {
            eprintln!("note: this CPU lacks {feature}: checking that --backend {backend} says so");
            assert_eq!(o.status.code(), Some(1), "{backend}: {}", stderr(&o));
            assert!(stderr(&o).contains("does not have"), "{}", stderr(&o));
            assert!(!out.exists() && !dir.path().join("bad.h").exists());
        }
    }
}

#[test]
fn plan_shows_fusion_and_threads_and_run_honours_them() {
    let args = [
        "plan",
        "examples/mobilenet_v2.conv",
        "--layer",
        "mbv2_inverted_residual",
        "--json",
    ];
    let p: serde_json::Value = serde_json::from_str(stdout(&convjit(&args)).trim()).unwrap();
    let groups = p["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 1, "{p}");
    assert_eq!(
        groups[0]["stages"],
        serde_json::json!(["expand", "dw", "project"])
    );
    assert!(groups[0]["why"].as_str().unwrap().contains("fused"));
    let unfused: serde_json::Value =
        serde_json::from_str(stdout(&convjit(&[&args[..], &["--no-fuse"]].concat())).trim())
            .unwrap();
    assert_eq!(unfused["groups"].as_array().unwrap().len(), 3);

    let run = [
        "run",
        "examples/mobilenet_v2.conv",
        "--layer",
        "mbv2_inverted_residual",
        "--batch",
        "2",
    ];
    let reference = stdout(&convjit(&[&run[..], &["--engine", "interp"]].concat()));
    for extra in [
        &["--threads", "2"][..],
        &["--no-fuse", "--threads", "3"],
        &["--fuse-all", "--band-rows", "5"],
    ] {
        let o = convjit(&[&run[..], extra].concat());
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert_eq!(stdout(&o), reference, "{extra:?}");
    }
}

#[test]
fn plan_shows_each_threads_channels_where_threads_split_them() {
    // 17 rows split 9 and 8; the output channels split evenly on any
    // generator's vectors (4, 8 or 16 lanes).
    let layer = ["benches/suite.conv", "--layer", "incep_sp_sep_17x17x128_7"];
    let o = convjit(&[&["plan"][..], &layer, &["--threads", "2"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("2 threads on output channels"), "{text}");
    assert!(text.contains("thread 0: output channels 0..64"), "{text}");
    assert!(text.contains("thread 1: output channels 64..128"), "{text}");
    let run = |extra: &[&str]| {
        let o = convjit(&[&["run"][..], &layer, extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    // Each output is reduced in the same order on one thread or two.
    assert_eq!(run(&["--threads", "2"]), run(&[]));
}

#[test]
fn a_layer_too_wide_to_compile_is_a_clear_error_not_a_hang() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("wide.conv");
    std::fs::write(
        &conv,
        "layer wide {\n  input 1x16384x1\n  c: conv 1x16384 -> 1, pad same\n}\n",
    )
    .unwrap();
    let t = std::time::Instant::now();
    let o = convjit(&["run", s(&conv)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("too wide to compile"), "{}", stderr(&o));
    assert!(t.elapsed().as_secs() < 30);
    // The interpreter still runs it.
    assert!(convjit(&["run", s(&conv), "--engine", "interp"])
        .status
        .success());
}

/// A layer of 20,000 stages: checked and planned (fused or not) in time
/// linear in its stages (it took minutes), and refused by `run` and
/// `build` before any planning, with the reason.
#[test]
fn a_layer_of_20000_stages_is_planned_and_refused_quickly() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("long.conv");
    let stages: String = (0..20_000)
        .map(|i| match i % 2 {
            0 => format!("  s{i}: depthwise 3x3, pad same\n"),
            _ => format!("  s{i}: pointwise 8\n"),
        })
        .collect();
    std::fs::write(&conv, format!("layer long {{\n  input 8x8x8\n{stages}}}\n")).unwrap();
    let o = convjit(&["check", s(&conv)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = convjit(&["plan", s(&conv), "--fuse-all"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("  group 1: [s0, s1, "), "{}", &text[..1000]);
    assert!(!text.contains("  group 2:"));
    let o = convjit(&["plan", s(&conv), "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(plan["stages"].as_array().unwrap().len(), 20_000);
    let out = dir.path().join("k.o");
    for args in [
        vec!["run", s(&conv)],
        vec!["build", s(&conv), "-o", s(&out)],
    ] {
        let o = convjit(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("layer 'long' has 20000 stages: at most 4000 compile"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    assert!(!out.exists() && !out.with_extension("h").exists());
    // What no generator compiles is not verified.
    let o = convjit(&["verify", s(&conv)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("NOT VERIFIED  not compiled: layer 'long' has 20000 stages"),
        "{}",
        stdout(&o)
    );
}

/// A Sobel dx/dy bank on a grey image, with its weights, in a fresh directory.
fn sobel() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("s.conv");
    std::fs::write(
        &conv,
        "layer sobel {\n  input 12x10x1\n  f: conv 3x3 -> 2, pad same, bias\n}\n",
    )
    .unwrap();
    let (sm, d) = ([1f32, 2.0, 1.0], [-1f32, 0.0, 1.0]);
    let mut w = Vec::new();
    for i in 0..3 {
        for j in 0..3 {
            w.extend([sm[i] * d[j], d[i] * sm[j]]);
        }
    }
    let weights = dir.path().join("w.npz");
    let (wa, ba) = (
        Array::new(vec![3, 3, 1, 2], w),
        Array::new(vec![2], vec![0.5, -0.5]),
    );
    npy::write_npz(&weights, &[("f.weight", &wa), ("f.bias", &ba)]).unwrap();
    (dir, conv, weights)
}

/// `convjit run` of `conv` with weights `w` and `extra` arguments, on the
/// JIT and on the interpreter: their outputs.
fn jit_and_interp(dir: &Path, conv: &Path, w: &Path, extra: &[&str]) -> [Vec<f32>; 2] {
    ["jit", "interp"].map(|engine| {
        let out = dir.join(format!("{engine}.npy"));
        let args = [
            "run",
            s(conv),
            "--weights",
            s(w),
            "--output",
            s(&out),
            "--engine",
            engine,
        ];
        let o = convjit(&[&args[..], extra].concat());
        assert!(o.status.success(), "{}", stderr(&o));
        npy::read_npy(&out).unwrap().data
    })
}

#[test]
fn separate_rank_approximates_says_how_far_and_runs() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("d.conv");
    std::fs::write(
        &conv,
        "layer d {\n  input 16x15x3\n  f: depthwise 7x7, pad same, bias\n}\n",
    )
    .unwrap();
    let w = dir.path().join("w.npz");
    let mut rng = convjit::Rng::new(8);
    let (wa, ba) = (
        Array::new(vec![7, 7, 3, 1], rng.vec(147, 1.0)),
        Array::new(vec![3], rng.vec(3, 1.0)),
    );
    npy::write_npz(&w, &[("f.weight", &wa), ("f.bias", &ba)]).unwrap();
    let o = convjit(&["plan", s(&conv), "--weights", s(&w), "--separate-rank", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(
        text.contains("f: every channel's 7x7 kernel approximated at rank 2: run as 2 7x1 then 2 1x7 summed (49 -> 28 MACs per output; relative error "),
        "{text}"
    );
    assert!(
        text.contains("f.row  conv 1x7 -> 3, groups 3, pad 0 0 3 3, bias"),
        "{text}"
    );
    // Rank 4 would not save work: run whole, and the note says why.
    let o = convjit(&["plan", s(&conv), "--weights", s(&w), "--separate-rank", "4"]);
    assert!(
        stdout(&o).contains("would not save work (49 -> 56 MACs"),
        "{}",
        stdout(&o)
    );

    // The kernel runs the approximation; the interpreter the layer as written.
    let [jit, interp] = &jit_and_interp(dir.path(), &conv, &w, &["--separate-rank", "2"]);
    let diff = jit
        .iter()
        .zip(interp)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    let scale = interp.iter().map(|x| x.abs()).fold(0f32, f32::max);
    assert!(diff > 1e-3 * scale && diff < scale, "{diff} of {scale}");
}

#[test]
fn rank1_weights_are_planned_run_benched_and_built_separated() {
    let (dir, conv, w) = sobel();
    // Whether separating pays is the cost model's call, per code generator:
    // Cranelift's (on every host) takes it for this layer.
    let cl = ["--backend", "cranelift"];
    let plan = |extra: &[&str]| {
        convjit(&[&["plan", s(&conv), "--weights", s(&w)], &cl[..], extra].concat())
    };
    let o = plan(&[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line =
        "f: every output's 3x3 kernel has rank 1: run as 3x1 then 1x3 (9 -> 6 MACs per output)";
    assert!(stdout(&o).contains(line), "{}", stdout(&o));
    assert!(stdout(&o).contains("f.col  conv 3x1 -> 2, pad 1 1 0 0"));
    assert!(stdout(&o).contains("f.row  depthwise 1x3, pad 0 0 1 1, bias"));
    let text = stdout(&o);
    let decision = text.lines().find(|l| l.contains("separation: estimated"));
    assert!(
        decision.is_some_and(|d| d.contains("cycles whole") && d.ends_with(": runs separated")),
        "{text}"
    );
    // Every generator's plan says what it decided, and plans that.
    for b in convjit::Backend::available() {
        let o = convjit(&["plan", s(&conv), "--weights", s(&w), "--backend", b.name()]);
        let text = stdout(&o);
        let separated = text.contains(": runs separated");
        assert!(separated || text.contains(": runs whole"), "{text}");
        assert_eq!(text.contains("f.col"), separated, "{text}");
    }
    let o = plan(&["--no-separate"]);
    assert!(o.status.success() && !stdout(&o).contains("rank 1") && !stdout(&o).contains("f.col"));
    let o = plan(&["--json"]);
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(j["separation"][0]["separated"], true);
    assert_eq!(j["separation_cost"]["separated"], true);
    assert_eq!(j["stages"].as_array().unwrap().len(), 2);
    // Kernels of rank 1 take rank 1 (exactly) whatever rank is allowed.
    let o = plan(&["--separate-rank", "2"]);
    assert!(stdout(&o).contains(line), "{}", stdout(&o));
    let o = plan(&["--separate-rank", "2", "--no-separate"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));

    // The separated JIT agrees with the interpreter on the original weights.
    let input = dir.path().join("in.npy");
    let x: Vec<f32> = (0..240)
        .map(|i| ((i * 37) % 17) as f32 / 8.0 - 1.0)
        .collect();
    npy::write_npy(&input, &[2, 12, 10, 1], &x).unwrap();
    let outs = jit_and_interp(dir.path(), &conv, &w, &["--input", s(&input)]);
    for (a, b) in outs[0].iter().zip(&outs[1]) {
        assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
    }

    let o = convjit(&[
        "bench",
        s(&conv),
        "--weights",
        s(&w),
        "--json",
        "--seconds",
        "0.02",
        "--no-baselines",
        "--backend",
        "cranelift",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    let variants: Vec<&str> = j["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .collect();
    assert!(
        variants.contains(&"jit") && variants.contains(&"jit-unseparated"),
        "{variants:?}"
    );
    assert_eq!(j["separation"][0]["separated"], true);
    assert!(j["results"][0]["max_abs_diff_vs_interp"].as_f64().unwrap() < 1e-4);

    let obj = dir.path().join("k.o");
    let o = convjit(&["build", s(&conv), "--weights", s(&w), "-o", s(&obj)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains(line), "{}", stderr(&o));
    assert!(obj.exists() && dir.path().join("k.h").exists());
}

#[test]
fn verify_checks_every_generator_of_every_layer() {
    let o = convjit(&["verify", "examples/textbook.conv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let backends = convjit::Backend::available();
    for layer in ["textbook_standard", "textbook_separable"] {
        assert!(text.contains(&format!("layer {layer}:")), "{text}");
    }
    for b in &backends {
        let lines = text
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{} ", b.name())))
            .collect::<Vec<_>>();
        assert_eq!(lines.len(), 2, "{b}: {text}");
        assert!(lines.iter().all(|l| l.contains(" PASS ")), "{text}");
        assert!(lines.iter().all(|l| l.contains("tolerance")), "{text}");
    }
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "{} kernels checked, 0 failed (2 layers)",
            2 * backends.len()
        )
    );

    // One generator, one layer, given weights.
    let f = fixture();
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "--backend",
        "cranelift",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("  cranelift  PASS"), "{}", stdout(&o));
    assert!(stdout(&o).ends_with("1 kernels checked, 0 failed (1 layers)\n"));

    // Weights that do not fit, an unknown generator, one the host lacks.
    let o = convjit(&[
        "verify",
        "examples/textbook.conv",
        "--layer",
        "textbook_standard",
        "--weights",
        s(&f.weights),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = convjit(&["verify", "examples/textbook.conv", "--backend", "neon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    if !convjit::Backend::Avx512.host_has() {
        let o = convjit(&["verify", "examples/textbook.conv", "--backend", "avx512"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("AVX-512"), "{}", stderr(&o));
    }
}

#[test]
fn fuzz_checks_random_layers_and_ends_with_the_count() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("failures");
    let o = convjit(&["fuzz", "--cases", "40", "--seed", "3", "--out", s(&out)]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    let text = stdout(&o);
    assert_eq!(
        text.lines().last(),
        Some("40 layers, 0 mismatches"),
        "{text}"
    );
    assert!(text.contains("layers/s"), "{text}");
    assert!(!out.exists(), "no failures, no reproducers");
    let o = convjit(&["fuzz", "--cases", "5", "--seconds", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn bench_plots_a_roofline_with_peer_points() {
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("roof.svg");
    let peers = dir.path().join("peers.json");
    // The peers' format (bench_peers.py --out-json), matched by MAC count.
    std::fs::write(
        &peers,
        r#"{"layers": [{"name": "tb_sep", "macs": 53952,
             "results": {"ort": {"full": {"gflops": 12.5}}}}]}"#,
    )
    .unwrap();
    let args = [
        "bench",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--seconds",
        "0.02",
        "--no-interp",
        "--no-baselines",
        "--json",
        "--plot",
        s(&svg),
        "--peers",
        s(&peers),
    ];
    let o = convjit(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(report["memcpy_gbs"].as_f64().unwrap() > 0.0);
    assert_eq!(
        report["min_traffic_bytes"],
        4 * (12 * 12 * 3 + 8 * 8 * 256 + 5 * 5 * 3 + 3 * 256)
    );
    let text = std::fs::read_to_string(&svg).unwrap();
    let variants: Vec<&str> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["variant"].as_str().unwrap())
        .filter(|v| !v.ends_with("-peak"))
        .collect();
    // One point per variant, one for the peer (matched to this layer by
    // its MACs), and a legend marker for each of the four kinds of point.
    assert_eq!(
        text.matches("<circle").count(),
        variants.len() + 1 + 4,
        "{text}"
    );
    // The layer, numbered at its point and in the key.
    assert!(text.contains("\n 1  textbook_separable\n"), "{text}");
    assert!(text.contains("\n1\n"));
    assert!(text.contains("\npeers\n"));
    // A peers file that is not the peers' format: exit 1, no plot.
    std::fs::remove_file(&svg).unwrap();
    std::fs::write(&peers, "{}").unwrap();
    let o = convjit(&args);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("layers"), "{}", stderr(&o));
    assert!(!svg.exists());
}

#[test]
fn verify_checks_a_built_object() {
    let have_cc = Command::new("cc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_cc {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "*** SKIPPED verify --object: cc not found (apt-get install gcc) ***"
        );
        assert_ne!(
            std::env::var("CONVJIT_REQUIRE_TOOLS").as_deref(),
            Ok("1"),
            "cc is missing and CONVJIT_REQUIRE_TOOLS=1"
        );
        return;
    }
    let f = fixture();
    let obj = f.dir.path().join("k.o");
    let o = convjit(&[
        "build",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "-o",
        s(&obj),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "--object",
        s(&obj),
        "--batch",
        "2",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("  object     PASS  worst error"),
        "{}",
        stdout(&o)
    );
    // Other weights than those baked in: the object disagrees.
    let other = f.dir.path().join("other.npz");
    write_weights(
        &other,
        &[
            ("dw.weight", vec![3, 3, 3, 1]),
            ("dw.bias", vec![3]),
            ("pw.weight", vec![3, 2]),
        ],
    );
    let npz = convjit::npy::read_npz(&other).unwrap();
    let mut doubled: Vec<(&str, Array)> = Vec::new();
    for k in ["dw.weight", "dw.bias", "pw.weight"] {
        let a = npz.get(k).unwrap();
        doubled.push((
            k,
            Array::new(a.shape.clone(), a.data.iter().map(|v| v * 2.0).collect()),
        ));
    }
    let refs: Vec<(&str, &Array)> = doubled.iter().map(|(k, a)| (*k, a)).collect();
    npy::write_npz(&other, &refs).unwrap();
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&other),
        "--object",
        s(&obj),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("  object     FAIL"), "{}", stdout(&o));
    // Not an object: exit 1 with the linker's message.
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "--object",
        s(&f.conv),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("linking with cc failed"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    // The reader is gone before convjit writes (`plan ... | head -0`):
    // killed by SIGPIPE or, if the pipe took it all first, success; never
    // a panic.
    let mut child = Command::new(env!("CARGO_BIN_EXE_convjit"))
        .args(["plan", "examples/mobilenet_v2.conv"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!err.contains("panicked"), "{err}");
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            // 13: SIGPIPE on every Unix.
            o.status.success() || o.status.signal() == Some(13),
            "{:?}",
            o.status
        );
    }
}
