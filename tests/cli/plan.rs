//! `convjit plan`: MACs, fusion, threads and their reasons; layers too wide or too long to compile.

use super::*;

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
    assert!(stderr(&o).contains("too much to compile"), "{}", stderr(&o));
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
    // The plan is shown, and that `run` would refuse it said (text, JSON).
    assert!(
        text.contains("\n  compile: refused: layer 'long' has 20000 stages"),
        "{}",
        &text[text.len().saturating_sub(600)..]
    );
    assert!(text.contains("  group 1: [s0, s1, "), "{}", &text[..1000]);
    assert!(!text.contains("  group 2:"));
    let o = convjit(&["plan", s(&conv), "--json"]);
    let plan: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(plan["stages"].as_array().unwrap().len(), 20_000);
    let refused = plan["refused"].as_str().unwrap();
    assert!(
        refused.starts_with("layer 'long' has 20000 stages"),
        "{refused}"
    );
    let out = dir.path().join("k.o");
    for args in [
        vec!["run", s(&conv)],
        vec!["build", s(&conv), "-o", s(&out)],
    ] {
        let o = convjit(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("layer 'long' has 20000 stages: more than 4000 never compile"),
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

/// A legal layer of 1 GiB tensors and a 16384x16384 kernel (7.2e16
/// multiply-accumulates): every command refuses it at once, before making
/// a GiB of random weights (under a 1 GiB address-space limit, that
/// allocation aborted the process), and says why; none hangs in the
/// interpreter.
#[test]
fn layers_too_wide_or_too_slow_are_refused_before_any_data() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("huge.conv");
    std::fs::write(
        &conv,
        "layer huge {\n  input 16384x16384x1\n  c: conv 16384x16384 -> 1, pad same\n}\n",
    )
    .unwrap();
    let limited = |args: &[&str]| convjit_limited(args, 1 << 30);
    for (args, needle) in [
        (vec!["run", s(&conv)], "instructions of specialised code"),
        (
            vec!["run", s(&conv), "--engine", "interp"],
            "too much work for the interpreter: layer 'huge' on 1 images is 7.206e16",
        ),
        (
            vec!["bench", s(&conv), "--seconds", "0.01"],
            "layer 'huge': the layer would need about",
        ),
    ] {
        let o = limited(&args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(needle), "{args:?}: {}", stderr(&o));
    }
    // In a file of several layers, bench refuses before timing the first.
    let two = dir.path().join("two.conv");
    std::fs::write(
        &two,
        format!(
            "layer small {{ input 4x4x4\n p: pointwise 4 }}\n{}",
            std::fs::read_to_string(&conv).unwrap()
        ),
    )
    .unwrap();
    let o = convjit(&["bench", s(&two), "--seconds", "0.01", "--json"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stdout(&o).is_empty(),
        "timed before refusing: {}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("layer 'huge': the layer would need about"),
        "{}",
        stderr(&o)
    );
    let o = limited(&["verify", s(&conv)]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with("layer huge: 16384x16384x1 -> 16384x16384x1"),
        "{out}"
    );
    assert!(
        out.contains("NOT VERIFIED  no reference: too much work for the interpreter"),
        "{out}"
    );
}

/// `plan` refuses what `run` refuses (a generator that cannot compute the
/// precision), and options that change nothing say so.
#[test]
fn plan_refuses_what_run_refuses_and_ignored_options_say_so() {
    for backend in ["avx2", "cranelift"] {
        let args = [
            "examples/textbook.conv",
            "--layer",
            "textbook_standard",
            "--backend",
            backend,
            "--precision",
            "bf16",
        ];
        let plan = convjit(&[&["plan"][..], &args].concat());
        let run = convjit(&[&["run"][..], &args].concat());
        if convjit::Backend::parse(backend).unwrap().host_has() {
            assert_eq!(plan.status.code(), Some(1), "{}", stderr(&plan));
            assert_eq!(run.status.code(), Some(1), "{}", stderr(&run));
            assert!(
                stderr(&plan).contains("precision bf16"),
                "{}",
                stderr(&plan)
            );
        }
    }
    let o = convjit(&[
        "run",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--bf16-units",
        "dot",
        "--f32-intermediates",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("note: --bf16-units applies with --precision bf16 only"));
    assert!(stderr(&o).contains("note: --f32-intermediates applies with --precision bf16 only"));
    let o = convjit(&[
        "plan",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--separate-rank",
        "1",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("without --weights the plan shows the layer as written"));
}

/// `fuzz --out` where no reproducer could be written is refused before
/// the run (a mismatch found after an hour would have been lost); a
/// fine one is not created when nothing fails.
#[test]
fn fuzz_checks_its_out_directory_first() {
    let o = convjit(&["fuzz", "--cases", "1", "--out", "/dev/null/x"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("/dev/null is not a directory"),
        "{}",
        stderr(&o)
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a/b");
    let o = convjit(&["fuzz", "--cases", "2", "--out", s(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!dir.path().join("a").exists());
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
