//! `convjit check`: every example validates; bad layer files and usage errors.

use super::*;

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
    // A file of many layers names the first 20, and counts the rest.
    let many = f.dir.path().join("many.conv");
    let text: String = (0..30)
        .map(|i| format!("layer l{i} {{ input 2x2x1\n p: pointwise 1 }}\n"))
        .collect();
    std::fs::write(&many, text).unwrap();
    let o = convjit(&["run", s(&many)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("(l0, l1, l2, l3, l4, l5, l6, l7, l8, l9, l10, l11, l12, l13, l14, l15, l16, l17, l18, l19, and 10 more)"),
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
