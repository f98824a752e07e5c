//! The JIT against the TensorFlow-checked reference vectors in the
//! repository's `tests/oracle/` (layers built from each case's spec as a
//! user would write them, see `tests/common/oracle.rs`).

#[path = "../../../tests/common/oracle.rs"]
mod oracle;

use convjit_jit::Kernel;
use convjit_plan::{Backend, Options};

#[test]
fn jit_matches_every_reference_case() {
    let cases = oracle::cases();
    assert!(cases.len() >= 29, "only {} cases found", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        for backend in Backend::available() {
            let o = Options {
                backend,
                ..Options::default()
            };
            let k = Kernel::compile_with(&c.layer, &c.weights, &o).unwrap();
            let got = k.run_alloc(&c.input, c.batch).unwrap();
            let (diff, at) = oracle::max_abs_diff(&got, &c.expected);
            if diff.is_nan() || diff > c.atol {
                failures.push(format!(
                    "{}, {backend}: |jit - expected| = {diff} at {at} > atol {}\n{}",
                    c.name, c.atol, c.text
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
