//! `convjit verify`: every generator of every layer, and built objects.

use super::*;

#[test]
fn verify_checks_every_generator_of_every_layer() {
    let o = convjit(&["verify", "examples/textbook.conv"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let backends = convjit::Backend::available();
    for layer in ["textbook_standard", "textbook_separable"] {
        assert!(text.contains(&format!("layer {layer}:")), "{text}");
    }
    for b in &backends {
        let lines = text
            .lines()
            .filter(|l| l.trim_start().starts_with(&format!("{} ", b.name())))
            .collect::<Vec<_>>();
        assert_eq!(lines.len(), 2, "{b}: {text}");
        assert!(lines.iter().all(|l| l.contains(" PASS ")), "{text}");
        assert!(lines.iter().all(|l| l.contains("tolerance")), "{text}");
    }
    let last = text.lines().last().unwrap();
    assert_eq!(
        last,
        format!(
            "{} kernels checked, 0 failed (2 layers)",
            2 * backends.len()
        )
    );

    // One generator, one layer, given weights.
    let f = fixture();
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "--backend",
        "cranelift",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("  cranelift  PASS"), "{}", stdout(&o));
    assert!(stdout(&o).ends_with("1 kernels checked, 0 failed (1 layers)\n"));

    // Weights that do not fit, an unknown generator, one the host lacks.
    let o = convjit(&[
        "verify",
        "examples/textbook.conv",
        "--layer",
        "textbook_standard",
        "--weights",
        s(&f.weights),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let o = convjit(&["verify", "examples/textbook.conv", "--backend", "neon"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    if !convjit::Backend::Avx512.host_has() {
        let o = convjit(&["verify", "examples/textbook.conv", "--backend", "avx512"]);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains("AVX-512"), "{}", stderr(&o));
    }
}

#[test]
#[cfg_attr(no_cc, ignore = "cc not found: apt-get install gcc")]
fn verify_checks_a_built_object() {
    let f = fixture();
    let obj = f.dir.path().join("k.o");
    let o = convjit(&[
        "build",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "-o",
        s(&obj),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "--object",
        s(&obj),
        "--batch",
        "2",
    ]);
    assert!(o.status.success(), "{}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("  object     PASS  worst error"),
        "{}",
        stdout(&o)
    );
    // Other weights than those baked in: the object disagrees.
    let other = f.dir.path().join("other.npz");
    write_weights(
        &other,
        &[
            ("dw.weight", vec![3, 3, 3, 1]),
            ("dw.bias", vec![3]),
            ("pw.weight", vec![3, 2]),
        ],
    );
    let npz = convjit::npy::read_npz(&other).unwrap();
    let mut doubled: Vec<(&str, Array)> = Vec::new();
    for k in ["dw.weight", "dw.bias", "pw.weight"] {
        let a = npz.get(k).unwrap();
        doubled.push((
            k,
            Array::new(a.shape.clone(), a.data.iter().map(|v| v * 2.0).collect()),
        ));
    }
    let refs: Vec<(&str, &Array)> = doubled.iter().map(|(k, a)| (*k, a)).collect();
    npy::write_npz(&other, &refs).unwrap();
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&other),
        "--object",
        s(&obj),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("  object     FAIL"), "{}", stdout(&o));
    // Not an object: exit 1 with the linker's message.
    let o = convjit(&[
        "verify",
        s(&f.conv),
        "--weights",
        s(&f.weights),
        "--object",
        s(&f.conv),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("linking with cc failed"),
        "{}",
        stderr(&o)
    );
}
