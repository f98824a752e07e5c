//! `convjit build`: an object and its header, or nothing; CPU levels and generators.

use super::*;

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
