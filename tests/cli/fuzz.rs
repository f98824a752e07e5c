//! `convjit fuzz`: random layers and the final count.

use super::*;

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
