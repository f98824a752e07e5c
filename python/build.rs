//! Probes what `tests/pytest.rs` needs beyond Rust: python3 with numpy
//! and pytest. Where it is missing the test is *ignored*, with the
//! reason, in cargo's summary (`cfg(no_pytest)`, as the root package does
//! for `cc`: see `build/probe.rs`); with `CONVJIT_REQUIRE_TOOLS=1` it runs
//! and fails. The extension module itself does not use this.

include!("../build/probe.rs");

fn main() {
    missing_tool_cfg("no_python", &["python3"]);
    println!("cargo::rustc-check-cfg=cfg(no_pytest)");
    let required = std::env::var("CONVJIT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    let importable = std::process::Command::new("python3")
        .args(["-c", "import numpy, pytest"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !required && !importable {
        println!("cargo::rustc-cfg=no_pytest");
    }
}
