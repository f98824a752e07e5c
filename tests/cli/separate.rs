//! Separation on the command line: rank-1 weights and `--separate-rank`, planned, run, benched and built.

use super::*;

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
    // On AVX-512, the pair fused runs in registers (one function): `plan`
    // says so, its JSON too, and `run` agrees with the interpreter.
    if convjit::Backend::available().contains(&convjit::Backend::Avx512) {
        let pair = ["--backend", "avx512", "--fuse-all"];
        let o = convjit(&[&["plan", s(&conv), "--weights", s(&w)], &pair[..]].concat());
        assert!(
            stdout(&o).contains("[f.col, f.row], in registers"),
            "{}",
            stdout(&o)
        );
        let o = convjit(&[&["plan", s(&conv), "--weights", s(&w), "--json"], &pair[..]].concat());
        let j: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
        assert_eq!(j["groups"][0]["in_registers"], true, "{j}");
        let outs = jit_and_interp(
            dir.path(),
            &conv,
            &w,
            &[&["--input", s(&input)], &pair[..]].concat(),
        );
        for (a, b) in outs[0].iter().zip(&outs[1]) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    } else {
        println!("note: this CPU does not run the avx512 generator: the pair in registers is not checked");
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
