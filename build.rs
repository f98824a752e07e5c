//! Probes what two of the command line's tests need beyond Rust, so that
//! where it is missing they are *ignored*, with the reason, in cargo's
//! summary rather than passing without testing: `cc` for `verify
//! --object` (`cfg(no_cc)`, see `build/probe.rs`), and the right to mount
//! a tmpfs for the full-disk test (`cfg(no_mount)`). The binary itself
//! does not use them.

include!("build/probe.rs");

fn main() {
    missing_tool_cfg("no_cc", &["cc"]);
    mount_right();
}

/// Sets `cfg(no_mount)` unless this process may mount file systems
/// (CAP_SYS_ADMIN in its effective capabilities: root, outside a
/// restricted container). A right, not a tool: `CONVJIT_REQUIRE_TOOLS`
/// does not change this.
fn mount_right() {
    println!("cargo::rustc-check-cfg=cfg(no_mount)");
    const CAP_SYS_ADMIN: u32 = 21;
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let may_mount = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|caps| u64::from_str_radix(caps.trim(), 16).ok())
        .is_some_and(|caps| caps >> CAP_SYS_ADMIN & 1 == 1);
    if !may_mount {
        println!("cargo::rustc-cfg=no_mount");
    }
}
