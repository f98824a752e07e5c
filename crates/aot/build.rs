//! Probes what the end-to-end tests (`tests/e2e.rs`) need beyond Rust, so
//! that a test which cannot run here is *ignored*, with its reason, in
//! cargo's summary rather than passing without testing: the C and C++
//! compilers (`cfg(no_cc)`, `cfg(no_cxx)`), the aarch64 cross compiler
//! and qemu (`cfg(no_aarch64_cross)`), and this CPU's x86-64 level
//! (`cfg(no_x86_64_v3)`, `cfg(no_x86_64_v4)`, and for bf16 objects
//! `cfg(no_znver4)`, `cfg(no_sapphirerapids)`: objects for a level run
//! only on a CPU that has it).

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
    println!("cargo::rustc-check-cfg=cfg(no_znver4)");
    println!("cargo::rustc-check-cfg=cfg(no_sapphirerapids)");
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
        // bf16 objects: AVX512_BF16 (znver4), and AMX-TILE + AMX-BF16
        // (CPUID leaf 7, EDX bits 24 and 22) beside it (sapphirerapids).
        let bf16 = v4 && has!("avx512bf16");
        let leaf7 = cpuid7_edx();
        let amx = bf16 && leaf7 & (1 << 24) != 0 && leaf7 & (1 << 22) != 0;
        if !bf16 {
            println!("cargo::rustc-cfg=no_znver4");
        }
        if !amx {
            println!("cargo::rustc-cfg=no_sapphirerapids");
        }
    }
}

/// CPUID leaf 7's EDX (the AMX bits).
#[cfg(target_arch = "x86_64")]
fn cpuid7_edx() -> u32 {
    std::arch::x86_64::__cpuid_count(7, 0).edx
}
