//! `--precision f32|bf16` on every command that takes it: bad spellings
//! are usage errors, bf16 where the host cannot compute it is exit 1 with
//! the reason, `build` refuses bf16 (before touching any file) where the
//! CPU it builds for has none and writes it for the CPUs that have it, and
//! where the host computes bf16 its kernels pass `verify` and `fuzz`.

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

/// bf16 where the named CPU, the generator or the target has no bf16
/// instructions: exit 1 with the reason, nothing written (an existing
/// header kept); a CPU name that does not exist is a usage error.
#[test]
fn build_refuses_bf16_without_the_instructions_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let obj = dir.path().join("k.o");
    std::fs::write(dir.path().join("k.h"), "kept").unwrap();
    let build = |extra: &[&str]| {
        let mut args = vec![
            "build",
            "examples/textbook.conv",
            "--layer",
            "textbook_separable",
            "--precision",
            "bf16",
            "-o",
            s(&obj),
        ];
        args.extend(extra);
        convjit(&args)
    };
    for (extra, says) in [
        (&["--cpu", "x86-64-v4"][..], "AVX512_BF16"),
        (&["--cpu", "x86-64-v3"], "AVX512_BF16"),
        (
            &["--cpu", "sapphirerapids", "--backend", "cranelift"],
            "avx512 code generator only",
        ),
        (&["--cpu", "znver4", "--backend", "avx2"], "avx512"),
        (
            &["--target", "aarch64-unknown-linux-gnu"],
            "aarch64 objects are f32",
        ),
        (
            &["--target", "x86_64-unknown-linux-gnu"],
            "--cpu sapphirerapids",
        ),
    ] {
        let o = build(extra);
        assert_eq!(o.status.code(), Some(1), "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(says), "{extra:?}: {}", stderr(&o));
        assert!(!obj.exists());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("k.h")).unwrap(),
            "kept"
        );
    }
    let o = build(&["--cpu", "icelake"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("sapphirerapids"), "{}", stderr(&o));
}

/// bf16 objects for the two named CPUs (a cross build where this host
/// lacks them): the header says the precision, what the CPU must have
/// and, with AMX, that the object asks for the tile state itself.
#[test]
fn build_writes_bf16_objects_for_the_named_cpus() {
    let dir = tempfile::tempdir().unwrap();
    for (cpu, amx) in [("sapphirerapids", true), ("znver4", false)] {
        let obj = dir.path().join(format!("{cpu}.o"));
        let o = convjit(&[
            "build",
            "examples/inception.conv",
            "--layer",
            "inception_7x1_1x7",
            "--precision",
            "bf16",
            "--cpu",
            cpu,
            "-o",
            s(&obj),
        ]);
        assert_eq!(o.status.code(), Some(0), "{cpu}: {}", stderr(&o));
        assert!(std::fs::metadata(&obj).unwrap().len() > 0);
        let h = std::fs::read_to_string(obj.with_extension("h")).unwrap();
        assert!(h.contains("Precision: bf16"), "{h}");
        assert!(h.contains("AVX512_BF16"), "{h}");
        assert!(h.contains("CONVJIT_ENOTILES"), "{h}");
        assert_eq!(h.contains("asks Linux for the tile state"), amx, "{h}");
        assert_eq!(stderr(&o).contains("AMX tiles"), amx, "{}", stderr(&o));
    }
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

/// `--bf16-units` on plan, run, bench, verify and fuzz: bad spellings are
/// usage errors; `dot` makes `plan` say which stages run `vdpbf16ps` and
/// why the others do not, and its kernels pass `verify` and `fuzz` where
/// the host has AVX512_BF16.
#[test]
fn bf16_units_choose_the_arithmetic_and_plan_says_which() {
    for cmd in ["plan", "run", "bench", "verify", "fuzz"] {
        // fuzz takes no layer file.
        let file = (cmd != "fuzz").then_some("examples/textbook.conv");
        for bad in ["DOT", "amx", "", &"x".repeat(70_000)] {
            let args: Vec<&str> = [cmd]
                .into_iter()
                .chain(file)
                .chain(["--bf16-units", bad])
                .collect();
            let o = convjit(&args);
            assert_eq!(o.status.code(), Some(2), "{cmd} {bad:.20}: {}", stderr(&o));
            assert!(stderr(&o).len() < 100_000, "{cmd}: a bounded echo");
        }
    }
    if !has_bf16() {
        return;
    }
    let dot = ["--precision", "bf16", "--bf16-units", "dot"];
    let plan = convjit(&[&["plan", "examples/mobilenet_v2.conv"][..], &dot].concat());
    assert!(plan.status.success(), "{}", stderr(&plan));
    let text = stdout(&plan);
    assert!(
        text.contains("tiles: none, vdpbf16ps (AVX512_BF16, asked for)"),
        "{text}"
    );
    assert!(
        text.contains("depthwise: f32 arithmetic on bf16 values"),
        "{text}"
    );
    assert!(!text.contains("AMX bf16"), "{text}");
    // MobileNet v2's body on channel pairs: block 0's depthwise stage
    // rounds the image as it loads it and stores bf16 that its pointwise
    // stage reads as pairs; an expand stage reading a layer's input still
    // has it converted.
    for line in [
        "input: rounded to bf16 as it is loaded (no pass over the image)",
        "read by 'project' as its channel pairs (no conversion)",
        "widened to f32 by depthwise 'dw'",
        "input: converted to bf16 channel pairs before each call",
    ] {
        assert!(text.contains(line), "{line}: {text}");
    }
    let verify = convjit(&[&["verify", "examples/textbook.conv"][..], &dot].concat());
    assert!(
        verify.status.success(),
        "{}{}",
        stdout(&verify),
        stderr(&verify)
    );
    assert!(stdout(&verify).contains(" 0 failed"), "{}", stdout(&verify));
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let fuzz = convjit(&[&["fuzz", "--cases", "12", "--out", dir][..], &dot].concat());
    assert!(fuzz.status.success(), "{}", stderr(&fuzz));
    assert!(
        stderr(&fuzz).contains("bf16 (dot units)"),
        "{}",
        stderr(&fuzz)
    );
    assert!(
        stdout(&fuzz).ends_with("12 layers, 0 mismatches\n"),
        "{}",
        stdout(&fuzz)
    );
}
