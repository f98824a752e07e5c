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
    assert!(stderr(&o).contains("not an object file"), "{}", stderr(&o));
}

/// An object that does not fit the layer is refused by what it says of
/// itself, before it is linked and run: one built without weights (its
/// function took the batch size for the weights: SIGSEGV), one built for
/// another shape (it read past the driver's buffers) or another layer.
#[test]
fn verify_refuses_an_object_that_does_not_fit() {
    let f = fixture();
    let build = |conv: &Path, obj: &Path, weights: bool| {
        let mut args = vec!["build", s(conv), "-o", s(obj)];
        if weights {
            args.extend(["--weights", s(&f.weights)]);
        }
        let o = convjit(&args);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    let verify = |obj: &Path| {
        convjit(&[
            "verify",
            s(&f.conv),
            "--weights",
            s(&f.weights),
            "--object",
            s(obj),
        ])
    };
    // The fixture's layer with `from` replaced by `to`, built (with its
    // weights or not) as `name`.o: verify's refusal, which must hold `want`.
    let refused = |name: &str, (from, to): (&str, &str), weights: bool, want: &str| {
        let conv = f.dir.path().join(format!("{name}.conv"));
        let text = std::fs::read_to_string(&f.conv).unwrap().replace(from, to);
        std::fs::write(&conv, text).unwrap();
        let obj = conv.with_extension("o");
        build(&conv, &obj, weights);
        let o = verify(&obj);
        assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
        assert!(stderr(&o).contains(want), "{}", stderr(&o));
    };
    // Without weights; the same layer name and weights, a larger image;
    // another layer's object.
    refused(
        "bare",
        ("", ""),
        false,
        "the object was built without --weights",
    );
    refused(
        "wide",
        ("5x4x3", "9x8x3"),
        true,
        "the object was built for 9x8x3 -> 9x8x2, f32, weights baked in; \
         the layer is 5x4x3 -> 5x4x2, f32, weights baked in",
    );
    refused(
        "other",
        ("layer l", "layer m"),
        true,
        "has no function convjit_l: it was built for another layer",
    );
}

/// Agreement on outputs that are all zero checks little: verify says so.
#[test]
fn verify_notes_an_all_zero_reference() {
    let f = fixture();
    let zeros: Vec<(&str, Array)> = [
        ("dw.weight", vec![3, 3, 3, 1]),
        ("dw.bias", vec![3]),
        ("pw.weight", vec![3, 2]),
    ]
    .into_iter()
    .map(|(k, shape): (&str, Vec<usize>)| {
        let n = shape.iter().product();
        (k, Array::new(shape, vec![0.0; n]))
    })
    .collect();
    let refs: Vec<(&str, &Array)> = zeros.iter().map(|(k, a)| (*k, a)).collect();
    npy::write_npz(&f.weights, &refs).unwrap();
    let o = convjit(&["verify", s(&f.conv), "--weights", s(&f.weights)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("note: every output of the interpreter is 0"),
        "{}",
        stdout(&o)
    );
    // Not on an ordinary check.
    let o = convjit(&["verify", "examples/textbook.conv"]);
    assert!(!stdout(&o).contains("note: every output"), "{}", stdout(&o));
}
