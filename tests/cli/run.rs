//! `convjit run`: results through files, engines, seeded data, and every bad input named.

use super::*;

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

/// The interpreter computes the precision asked for (it computed f32
/// whatever `--precision` said), and the summary counts NaNs (min and max
/// skip them).
#[test]
fn interp_takes_the_precision_and_the_summary_counts_nans() {
    let args = |precision| {
        let o = convjit(&[
            "run",
            "examples/textbook.conv",
            "--layer",
            "textbook_standard",
            "--engine",
            "interp",
            "--precision",
            precision,
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        stdout(&o)
    };
    let (f32, bf16) = (args("f32"), args("bf16"));
    assert_ne!(f32, bf16, "bf16 computed as f32:\n{f32}");
    let f = fixture();
    let mut x = vec![0.5; 60];
    x[7] = f32::NAN;
    npy::write_npy(&f.input, &[1, 5, 4, 3], &x).unwrap();
    let o = convjit(&[
        "run",
        s(&f.conv),
        "--input",
        s(&f.input),
        "--weights",
        s(&f.weights),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("  NaN "), "{}", stdout(&o));
}
