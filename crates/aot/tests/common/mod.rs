//! Shared helpers: layers, data, the magnitude-scaled comparison with the
//! reference interpreter, and running external tools.
#![allow(dead_code)]

use convjit_ir::{compile_source, Layer, Rng, Weights};
use std::path::Path;
use std::process::Command;

pub fn layer(src: &str) -> Layer {
    compile_source(src)
        .unwrap_or_else(|d| panic!("{src}: {d:?}"))
        .remove(0)
}

pub fn input(layer: &Layer, batch: usize, seed: u64) -> Vec<f32> {
    Rng::new(seed).vec(batch * layer.input.len(), 1.0)
}

/// Compares `got` with the interpreter's output for the same data, as
/// `convjit verify --object` does ([`convjit_aot::verify`]).
pub fn compare(
    what: &str,
    layer: &Layer,
    weights: &Weights,
    x: &[f32],
    batch: usize,
    got: &[f32],
) -> Result<(), String> {
    let c = convjit_aot::verify::compare_with_interpreter(layer, weights, x, batch, got)
        .map_err(|e| format!("{what}: {e}"))?;
    if !c.pass() {
        let (g, w) = c.values;
        return Err(format!(
            "{what}: output {}: got {g}, interpreter {w} (tol {})",
            c.worst, c.tolerance
        ));
    }
    Ok(())
}

pub fn write_f32(path: &Path, v: &[f32]) {
    convjit_aot::verify::write_f32(path, v).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

pub fn read_f32(path: &Path) -> Vec<f32> {
    convjit_aot::verify::read_f32(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Whether `tool` can be started at all.
pub fn have(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether every one of `tools` is installed, for the test `what`. When
/// one is missing the test is skipped, loudly (straight to stderr, past the
/// test harness's capture), unless `CONVJIT_REQUIRE_TOOLS=1` (set by
/// `.ci/run`, which installs them): then a missing tool fails the test, so
/// CI still proves the cross path. `install` says how to get them.
pub fn tools(what: &str, tools: &[&str], install: &str) -> bool {
    use std::io::Write;
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    let message = format!(
        "{what}: {} not found (install: {install})",
        missing.join(" and ")
    );
    if std::env::var("CONVJIT_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!("{message}; CONVJIT_REQUIRE_TOOLS=1 makes this a failure");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {message}; CONVJIT_REQUIRE_TOOLS=1 makes this a failure ***\n"
    );
    false
}

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{text}",
        out.status
    );
    text
}
