//! Shared helpers: layers, data, the magnitude-scaled comparison with the
//! reference interpreter, and running external tools (which `build.rs`
//! probes).
#![allow(dead_code)]

use convjit_ir::{compile_source, Layer, Precision, Reference, Rng, Weights};
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
/// `convjit verify --object` does ([`convjit_aot::verify`]); in bf16 with
/// the bf16 interpreter and within bf16's bound of the f32 one
/// ([`convjit_ir::Reference`]).
pub fn compare(
    what: &str,
    (layer, weights): (&Layer, &Weights),
    (x, batch): (&[f32], usize),
    got: &[f32],
    precision: Precision,
) -> Result<(), String> {
    let c = match precision {
        Precision::F32 => {
            convjit_aot::verify::compare_with_interpreter(layer, weights, x, batch, got)
                .map_err(|e| format!("{what}: {e}"))?
        }
        p => {
            let r =
                Reference::new(layer, weights, x, batch, p).map_err(|e| format!("{what}: {e}"))?;
            if got.len() != r.output.len() {
                return Err(format!(
                    "{what}: {} outputs, expected {}",
                    got.len(),
                    r.output.len()
                ));
            }
            r.compare(got)
        }
    };
    if !c.pass() {
        let (g, w) = c.values;
        return Err(format!(
            "{what} ({precision}): output {}: got {g}, interpreter {w} (tol {})",
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

/// Runs `cmd`; panics with its output unless it succeeds.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!(
            "cannot start {}: {e} (a missing tool: tests that need one are \
             ignored unless CONVJIT_REQUIRE_TOOLS=1, see build.rs)",
            cmd.get_program().to_string_lossy()
        )
    });
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
