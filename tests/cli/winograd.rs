//! `--winograd`: `run` through files with hostile values (NaN, infinities,
//! values whose transforms overflow) gives the direct kernel's bits where
//! a sum is not finite; `plan` says whether it runs and why; `verify`
//! checks it; the flag is refused where it has no meaning.

use super::*;

const LAYER: &str =
    "layer w { input 12x10x64\n c: conv 3x3 -> 64, pad same, bias, relu6, residual }\n";

/// Writes the layer, seeded weights and `input` (two images) into `dir`.
fn files(dir: &Path, input: &[f32]) -> (PathBuf, PathBuf, PathBuf) {
    let conv = dir.join("w.conv");
    std::fs::write(&conv, LAYER).unwrap();
    let l = convjit::parse_layers("w.conv", LAYER).unwrap().remove(0);
    let arrays = convjit::Weights::random(&l, 5).to_arrays(&l);
    let refs: Vec<(&str, &Array)> = arrays.iter().map(|(k, a)| (k.as_str(), a)).collect();
    let weights = dir.join("w.npz");
    npy::write_npz(&weights, &refs).unwrap();
    let x = dir.join("x.npy");
    npy::write_npy(&x, &[2, 12, 10, 64], input).unwrap();
    (conv, weights, x)
}

fn run(conv: &Path, weights: &Path, x: &Path, out: &Path, extra: &[&str]) -> Vec<f32> {
    let args = [
        "run",
        s(conv),
        "--weights",
        s(weights),
        "--input",
        s(x),
        "--output",
        s(out),
    ];
    let o = convjit(&[&args[..], extra].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    npy::read_npy(out).unwrap().data
}

#[test]
fn run_with_hostile_values_gives_the_direct_kernels_bits_where_sums_are_not_finite() {
    let dir = tempfile::tempdir().unwrap();
    let n = 12 * 10 * 64;
    let mut input = convjit::Rng::new(8).vec(2 * n, 1.0);
    input[77] = f32::NAN;
    input[900] = f32::INFINITY;
    input[2000] = -f32::INFINITY;
    input[3001] = f32::MAX;
    let (conv, weights, x) = files(dir.path(), &input);
    let out = dir.path().join("y.npy");
    let direct = run(&conv, &weights, &x, &out, &["--threads", "1"]);
    for (threads, tile) in [("1", "2"), ("2", "2"), ("1", "4"), ("2", "4")] {
        let wino = run(
            &conv,
            &weights,
            &x,
            &out,
            &[
                "--winograd=always",
                "--winograd-tile",
                tile,
                "--threads",
                threads,
            ],
        );
        // Image 0 holds the hostile values: the direct kernel's bits.
        let same = |a: &f32, b: &f32| a.to_bits() == b.to_bits();
        assert!(wino[..n].iter().zip(&direct[..n]).all(|(a, b)| same(a, b)));
        assert!(wino[..n].iter().any(|v| v.is_nan()));
        // Image 1 is Winograd's, close to the direct kernel's.
        let worst = wino[n..]
            .iter()
            .zip(&direct[n..])
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-3, "tile {tile}: {worst}");
    }
}

#[test]
fn plan_says_whether_winograd_runs_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("w.conv");
    let small = "layer s { input 16x16x8\n c: conv 3x3 -> 8, pad same }\n";
    std::fs::write(&conv, format!("{LAYER}{small}")).unwrap();
    let o = convjit(&["plan", s(&conv), "--layer", "w", "--winograd"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("winograd: F(2x2, 3x3)"),
        "{}",
        stdout(&o)
    );
    let o = convjit(&["plan", s(&conv), "--layer", "s", "--winograd"]);
    assert!(
        stdout(&o).contains("winograd: not used: fewer than 16"),
        "{}",
        stdout(&o)
    );
    // `always` runs it however small; a file after the bare flag is the
    // file, not the flag's value; an unknown value is a usage error.
    let o = convjit(&["plan", "--winograd=always", "--layer", "s", s(&conv)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("winograd: F(4x4, 3x3)"),
        "{}",
        stdout(&o)
    );
    let o = convjit(&["plan", "--layer", "w", "--winograd", s(&conv)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = convjit(&["plan", s(&conv), "--winograd=sometimes"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("auto, always"), "{}", stderr(&o));
    for bad in ["--winograd=", "--winograd=AUTO", "--winograd=always,auto"] {
        let o = convjit(&["plan", s(&conv), bad]);
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
    let o = convjit(&[
        "plan",
        s(&conv),
        "--layer",
        "w",
        "--winograd",
        "--precision",
        "bf16",
    ]);
    if o.status.success() {
        assert!(
            stdout(&o).contains("winograd: not used: bf16"),
            "{}",
            stdout(&o)
        );
    }
    let o = convjit(&["plan", s(&conv), "--layer", "w", "--winograd", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["winograd"]["used"], true);
    assert_eq!(v["winograd"]["tile"], 2);
    let o = convjit(&["plan", s(&conv), "--layer", "w", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert!(v["winograd"].is_null());
    // 4x4 tiles asked for; a tile of another size, or without --winograd,
    // is a usage error.
    let tile4 = ["plan", s(&conv), "--layer", "w", "--winograd"];
    let o = convjit(&[&tile4[..], &["--winograd-tile", "4"]].concat());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("winograd: F(4x4, 3x3)"),
        "{}",
        stdout(&o)
    );
    let o = convjit(&[&tile4[..], &["--winograd-tile", "4", "--json"]].concat());
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["winograd"]["tile"], 4);
    for bad in ["3", "0", "-4", "four", "", "4.0", "18446744073709551620"] {
        let o = convjit(&[&tile4[..], &["--winograd-tile", bad]].concat());
        assert_eq!(o.status.code(), Some(2), "{bad}: {}", stderr(&o));
    }
    let o = convjit(&["plan", s(&conv), "--winograd-tile", "4"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn verify_checks_winograd_and_build_does_not_take_it() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("w.conv");
    std::fs::write(&conv, LAYER).unwrap();
    let o = convjit(&[
        "verify",
        s(&conv),
        "--winograd",
        "--backend",
        "auto",
        "--batch",
        "2",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Winograd F(2x2, 3x3)") && stdout(&o).contains("PASS"));
    let o = convjit(&["verify", s(&conv), "--winograd", "--winograd-tile", "4"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Winograd F(4x4, 3x3)") && stdout(&o).contains("PASS"));
    // Objects are the direct kernel: the flag is a usage error there.
    let out = dir.path().join("k.o");
    let o = convjit(&["build", s(&conv), "-o", s(&out), "--winograd"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(!out.exists());
    let o = convjit(&[
        "verify",
        s(&conv),
        "--winograd",
        "--object",
        s(&out),
        "--weights",
        s(&conv),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// `fuzz --winograd`: random small 3x3 convs run as F(2x2, 3x3) and
/// F(4x4, 3x3) on every generator, within its bound; f32 only.
#[test]
fn fuzz_checks_winograd_on_random_layers() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("failures");
    let o = convjit(&[
        "fuzz",
        "--winograd",
        "--cases",
        "40",
        "--seed",
        "3",
        "--out",
        s(&out),
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).ends_with("40 layers, 0 mismatches\n"),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains("as Winograd's F(2x2, 3x3) and F(4x4, 3x3)"),
        "{}",
        stderr(&o)
    );
    assert!(!out.exists());
    let o = convjit(&["fuzz", "--winograd", "--precision", "bf16", "--cases", "1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

/// A layer of several stages (an imported ResNet bottleneck): `plan` says
/// which stage runs as F(2x2, 3x3) and why the others do not, in text and
/// JSON; `verify --winograd=always` checks it within the bound carried
/// through the stages.
#[test]
fn a_longer_layer_runs_its_3x3_stages_as_winograd() {
    let dir = tempfile::tempdir().unwrap();
    let conv = dir.path().join("b.conv");
    std::fs::write(
        &conv,
        "layer b { input 12x12x32\n a: pointwise 16, bias, relu\n c: conv 3x3 -> 16, pad same, bias, relu\n z: pointwise 32, bias, residual }\n",
    )
    .unwrap();
    let o = convjit(&["plan", s(&conv), "--winograd=always"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("winograd: stage c: F(2x2, 3x3)"), "{text}");
    assert!(
        text.contains("winograd: stage a: not used: the stage is not a conv"),
        "{text}"
    );
    let o = convjit(&["plan", s(&conv), "--winograd=always", "--json"]);
    let v: serde_json::Value = serde_json::from_str(stdout(&o).trim()).unwrap();
    assert_eq!(v["winograd"]["used"], true);
    assert_eq!(v["winograd"]["stages"][1]["stage"], "c");
    assert_eq!(v["winograd"]["stages"][1]["used"], true);
    assert_eq!(v["winograd"]["stages"][2]["used"], false);
    let o = convjit(&["verify", s(&conv), "--winograd=always", "--batch", "2"]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("Winograd F(2x2, 3x3)"),
        "{}",
        stdout(&o)
    );
}
