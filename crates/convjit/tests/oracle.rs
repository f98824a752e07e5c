//! The interpreter against TensorFlow-checked reference vectors: this pins
//! the oracle itself to the real semantics.

#[path = "../../../tests/common/oracle.rs"]
mod oracle;

#[test]
fn interpreter_matches_every_reference_case() {
    let cases = oracle::cases();
    assert!(cases.len() >= 29, "only {} cases found", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        let got = convjit::interpret(&c.layer, &c.weights, &c.input, c.batch).unwrap();
        let (diff, at) = oracle::max_abs_diff(&got, &c.expected);
        if diff.is_nan() || diff > c.atol {
            failures.push(format!(
                "{}: |got - expected| = {diff} at {at} > atol {}",
                c.name, c.atol
            ));
        }
        // Our `same`-padding resolution agrees with TensorFlow's.
        let pads: Vec<_> = c.layer.stages.iter().map(|s| s.padding).collect();
        assert_eq!(pads, c.pads, "{}: resolved padding", c.name);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn reference_macs_match_the_manifest() {
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(oracle::dir().join("manifest.json")).unwrap(),
    )
    .unwrap();
    for (c, m) in oracle::cases()
        .iter()
        .zip(manifest["cases"].as_array().unwrap())
    {
        let batch = m["input_shape"][0].as_u64().unwrap();
        assert_eq!(
            c.layer.macs() * batch,
            m["macs"].as_u64().unwrap(),
            "{}",
            c.name
        );
    }
}
