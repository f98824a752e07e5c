//! Data-driven diagnostics tests: every `tests/diagnostics/NAME.conv` is
//! checked with `convjit check`, whose stderr must equal `NAME.stderr`
//! beside it, with exit status 1. `UPDATE_EXPECT=1 cargo test --test
//! diagnostics` rewrites the expectations (review the diff!).

use std::path::Path;
use std::process::Command;

#[test]
fn every_bad_file_gives_its_expected_diagnostics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let update = std::env::var_os("UPDATE_EXPECT").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(root.join("tests/diagnostics"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "conv"))
        .collect();
    cases.sort();
    assert!(cases.len() >= 15, "found only {} cases", cases.len());
    let mut mismatches = Vec::new();
    for conv in &cases {
        let rel = conv.strip_prefix(root).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_convjit"))
            .arg("check")
            .arg(rel)
            .current_dir(root)
            .output()
            .unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(1), "{}: {stderr}", rel.display());
        assert!(
            out.stdout.is_empty(),
            "{}: printed to stdout",
            rel.display()
        );
        // Every error leads with FILE:LINE:COL.
        assert!(
            stderr.starts_with(&format!("{}:", rel.display())),
            "{}: {stderr}",
            rel.display()
        );
        let expect_path = conv.with_extension("stderr");
        if update {
            std::fs::write(&expect_path, &stderr).unwrap();
            continue;
        }
        let expected = std::fs::read_to_string(&expect_path).unwrap_or_default();
        if stderr != expected {
            mismatches.push(format!(
                "{}\n--- expected\n{expected}--- got\n{stderr}",
                rel.display()
            ));
        }
    }
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}
