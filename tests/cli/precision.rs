//! `--precision f32|bf16` on every command that takes it: bad spellings
//! are usage errors, bf16 where the host cannot compute it is exit 1 with
//! the reason, `build` refuses bf16 before touching any file, and where
//! the host computes bf16 its kernels pass `verify` and `fuzz`.

use super::*;

fn has_bf16() -> bool {
    let bf16 = convjit::Precision::Bf16;
    convjit::Backend::Avx512.check_precision(bf16).is_ok()
}

#[test]
fn bad_spellings_are_usage_errors() {
    for cmd in ["plan", "run", "bench", "verify"] {
        for bad in [
            "f16",
            "BF16",
            "",
            "bf16 ",
            "\u{202e}bf16",
            &"x".repeat(70_000),
        ] {
            let o = convjit(&[cmd, "examples/textbook.conv", "--precision", bad]);
            assert_eq!(o.status.code(), Some(2), "{cmd} {bad:.20}: {}", stderr(&o));
            assert!(
                stderr(&o).len() < 100_000,
                "{cmd}: the error echoes a bounded text"
            );
        }
    }
    let o = convjit(&["fuzz", "--cases", "1", "--precision", "int8"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}

#[test]
fn build_refuses_bf16_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let obj = dir.path().join("k.o");
    std::fs::write(dir.path().join("k.h"), "kept").unwrap();
    let o = convjit(&[
        "build",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--precision",
        "bf16",
        "-o",
        s(&obj),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(stderr(&o).contains("bf16"), "{}", stderr(&o));
    assert!(!obj.exists());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("k.h")).unwrap(),
        "kept"
    );
}

#[test]
fn bf16_runs_where_the_host_computes_it_and_is_refused_elsewhere() {
    let o = convjit(&[
        "verify",
        "examples/mobilenet_v1.conv",
        "--precision",
        "bf16",
    ]);
    let cranelift = convjit(&[
        "run",
        "examples/textbook.conv",
        "--layer",
        "textbook_separable",
        "--precision",
        "bf16",
        "--backend",
        "cranelift",
    ]);
    assert_eq!(cranelift.status.code(), Some(1), "{}", stderr(&cranelift));
    assert!(
        stderr(&cranelift).contains("bf16"),
        "{}",
        stderr(&cranelift)
    );
    if !has_bf16() {
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("AVX512_BF16"), "{}", stderr(&o));
        return;
    }
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains(" 0 failed"), "{}", stdout(&o));
    let plan = convjit(&["plan", "examples/inception.conv", "--precision", "bf16"]);
    assert!(plan.status.success(), "{}", stderr(&plan));
    assert!(
        stdout(&plan).contains("avx512 generator, bf16"),
        "{}",
        stdout(&plan)
    );
    assert!(stdout(&plan).contains("tiles: "), "{}", stdout(&plan));
    let fuzz = convjit(&[
        "fuzz",
        "--cases",
        "40",
        "--precision",
        "bf16",
        "--out",
        "/nonexistent/dir",
    ]);
    assert!(fuzz.status.success(), "{}", stderr(&fuzz));
    assert!(
        stdout(&fuzz).ends_with("40 layers, 0 mismatches\n"),
        "{}",
        stdout(&fuzz)
    );
}
