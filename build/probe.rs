// Included (`include!`) by the build scripts of the root package and of
// convjit-aot: which optional tools their tests can use. A test that needs
// a missing one is marked `#[cfg_attr(NAME, ignore = "...")]` and counts as
// ignored in cargo's summary, with the reason beside its name. With
// `CONVJIT_REQUIRE_TOOLS=1` (set by `.ci/run`, which installs the tools) no
// tool cfg is set: the tests run, and a missing tool fails them.

/// Whether `tool` is an executable file in a directory of `PATH`, as a
/// shell finding it there would start it.
fn on_path(tool: &str) -> bool {
    let Some(path) = std::env::var_os("PATH") else {
        return false;
    };
    std::env::split_paths(&path).any(|dir| {
        std::fs::metadata(dir.join(tool)).is_ok_and(|m| {
            #[cfg(unix)]
            let runs = std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o111 != 0;
            #[cfg(not(unix))]
            let runs = true;
            m.is_file() && runs
        })
    })
}

/// Declares `cfg(name)`, and sets it unless every one of `tools` is on
/// `PATH` or `CONVJIT_REQUIRE_TOOLS=1`. Rerun when either variable changes
/// (after installing a tool on the same `PATH`: `touch` the build script).
fn missing_tool_cfg(name: &str, tools: &[&str]) {
    println!("cargo::rerun-if-env-changed=PATH");
    println!("cargo::rerun-if-env-changed=CONVJIT_REQUIRE_TOOLS");
    println!("cargo::rustc-check-cfg=cfg({name})");
    let required = std::env::var("CONVJIT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    if !required && !tools.iter().all(|t| on_path(t)) {
        println!("cargo::rustc-cfg={name}");
    }
}
