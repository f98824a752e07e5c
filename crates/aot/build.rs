//! Probes what the end-to-end tests (`tests/e2e.rs`) need beyond Rust, so
//! that a test which cannot run here is *ignored*, with its reason, in
//! cargo's summary rather than passing without testing: the C and C++
//! compilers (`cfg(no_cc)`, `cfg(no_cxx)`), the aarch64 cross compiler
//! and qemu (`cfg(no_aarch64_cross)`), and this CPU's x86-64 level
//! (`cfg(no_x86_64_v3)`, `cfg(no_x86_64_v4)`: objects for a level run only
//! on a CPU that has it).

include!("../../build/probe.rs");

fn main() {
    missing_tool_cfg("no_cc", &["cc"]);
    missing_tool_cfg("no_cxx", &["c++"]);
    missing_tool_cfg(
        "no_aarch64_cross",
        &["aarch64-linux-gnu-gcc", "qemu-aarch64"],
    );
    cpu_levels();
}

/// Sets `cfg(no_x86_64_v3)` / `cfg(no_x86_64_v4)` where this CPU lacks a
/// feature of the level. Only when the tests run where they are built (an
/// x86_64 host building for itself); a CPU feature is no tool, so
/// `CONVJIT_REQUIRE_TOOLS` does not change this.
fn cpu_levels() {
    println!("cargo::rustc-check-cfg=cfg(no_x86_64_v3)");
    println!("cargo::rustc-check-cfg=cfg(no_x86_64_v4)");
    #[cfg(target_arch = "x86_64")]
    if std::env::var("HOST") == std::env::var("TARGET") {
        use std::arch::is_x86_feature_detected as has;
        let v3 = has!("avx2") && has!("fma") && has!("bmi1") && has!("bmi2") && has!("lzcnt");
        let v4 = v3 && has!("avx512f") && has!("avx512vl") && has!("avx512dq") && has!("avx512bw");
        if !v3 {
            println!("cargo::rustc-cfg=no_x86_64_v3");
        }
        if !v4 {
            println!("cargo::rustc-cfg=no_x86_64_v4");
        }
    }
}
