//! Probes what `tests/wheel_models.rs` needs beyond Rust: Python 3 with
//! `numpy`, `onnx` (whose wheel holds the six models) and `onnxruntime`.
//! Without them the test is *ignored*, with the reason, in cargo's
//! summary (`cfg(no_onnxruntime)`); with `CONVJIT_REQUIRE_TOOLS=1` (set by
//! `.ci/run`, which installs them) it runs, and their absence fails it.

fn main() {
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CONVJIT_REQUIRE_TOOLS");
    println!("cargo::rustc-check-cfg=cfg(no_onnxruntime)");
    let required = std::env::var("CONVJIT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    let found = std::process::Command::new("python3")
        .args(["-c", "import numpy, onnx, onnxruntime"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !required && !found {
        println!("cargo::rustc-cfg=no_onnxruntime");
    }
}
