//! Checking a built object against the interpreter (`convjit verify
//! --object`): the object, weights baked in, is linked by a C compiler
//! into a small driver that reads the input from a file, calls
//! `convjit_LAYER` and writes the output; the output is compared with the
//! interpreter's by the rule every comparison uses
//! (`convjit_ir::compare`). This crate's end-to-end tests do the same with
//! a larger harness (`tests/harness.c`: both variants, error paths) and
//! share the float files and the comparison.

use convjit_ir::{Comparison, DataError, Layer, Precision, Reference, Weights};
use std::io;
use std::path::Path;
use std::process::Command;

/// `v` as raw little-endian float32 in `path` (what the drivers read).
pub fn write_f32(path: &Path, v: &[f32]) -> io::Result<()> {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes)
}

/// The raw little-endian float32 of `path` (what the drivers write).
pub fn read_f32(path: &Path) -> io::Result<Vec<f32>> {
    Ok(std::fs::read(path)?
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// `got` against the interpreter's output for the same data; `Err` with
/// the reason where `got` has the wrong length (or the data do not fit).
pub fn compare_with_interpreter(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    got: &[f32],
) -> Result<Comparison, String> {
    let (want, magnitude) = convjit_ir::interpret_with_magnitude(layer, weights, input, batch)
        .map_err(|e| e.to_string())?;
    if got.len() != want.len() {
        return Err(format!("{} outputs, expected {}", got.len(), want.len()));
    }
    Ok(convjit_ir::compare(got, &want, &magnitude))
}

/// What checking an object found.
#[derive(Debug)]
pub enum Checked {
    /// The object ran; how far it is from the interpreter.
    Compared(Comparison),
    /// The object's function failed or gave the wrong number of outputs.
    Failed(String),
}

/// Why an object could not be checked at all.
#[derive(Debug)]
pub enum ObjectError {
    /// No such file, no temporary directory, or the C compiler could not
    /// start or link it (an object for another CPU, or without weights).
    Setup(String),
    /// The data do not fit the layer, or the interpreter's tensors memory.
    Data(DataError),
}

/// Links `object` (weights baked in, built for this machine) with `cc`
/// into a driver, runs it on `batch` images of `input` and compares its
/// output with the interpreter's in the `precision` it was built for
/// ([`Reference`]).
pub fn check_object(
    (layer, weights): (&Layer, &Weights),
    object: &Path,
    cc: &str,
    (input, batch): (&[f32], usize),
    precision: Precision,
) -> Result<Checked, ObjectError> {
    let setup = |m: String| ObjectError::Setup(m);
    if !object.is_file() {
        return Err(setup("no such object file".into()));
    }
    // What the object says it is, before linking and running it.
    let symbol = format!("convjit_{}", crate::c_identifier(&layer.name));
    if let Some(f) = crate::facts::read(object, &symbol).map_err(setup)? {
        let want = crate::facts::Facts::of(layer, true, precision);
        if !f.baked {
            return Err(setup(
                "the object was built without --weights (its function takes them as \
                 an argument); verify needs one with the weights baked in"
                    .into(),
            ));
        }
        if f != want {
            return Err(setup(format!(
                "the object was built for {f}; the layer is {want}"
            )));
        }
    }
    let reference =
        Reference::new(layer, weights, input, batch, precision).map_err(ObjectError::Data)?;
    let dir = tempfile::tempdir().map_err(|e| setup(format!("no temporary directory: {e}")))?;
    let (driver, exe) = (dir.path().join("driver.c"), dir.path().join("driver"));
    let (in_path, out_path) = (dir.path().join("in.f32"), dir.path().join("out.f32"));
    let io = |e: io::Error| setup(format!("temporary files: {e}"));
    std::fs::write(&driver, driver_source(&layer.name)).map_err(io)?;
    write_f32(&in_path, input).map_err(io)?;
    let link = Command::new(cc)
        .arg("-O1")
        .arg(&driver)
        .arg(object)
        .args(["-lm", "-o"])
        .arg(&exe)
        .output()
        .map_err(|e| setup(format!("cannot start the C compiler '{cc}': {e}")))?;
    if !link.status.success() {
        return Err(setup(format!(
            "linking with {cc} failed (an object for another CPU, or without baked weights?):\n{}",
            String::from_utf8_lossy(&link.stderr).trim_end()
        )));
    }
    let n_out = layer.output().len() * batch;
    let run = Command::new(&exe)
        .arg(&in_path)
        .arg(&out_path)
        .arg(input.len().to_string())
        .arg(n_out.to_string())
        .arg(batch.to_string())
        .output()
        .map_err(|e| setup(format!("cannot run the linked driver: {e}")))?;
    if !run.status.success() {
        return Ok(Checked::Failed(format!(
            "the object's function failed ({}): {}",
            run.status,
            String::from_utf8_lossy(&run.stderr).trim_end()
        )));
    }
    let got = read_f32(&out_path).map_err(io)?;
    if got.len() != n_out {
        return Ok(Checked::Failed(format!(
            "{} outputs, expected {n_out}",
            got.len()
        )));
    }
    Ok(Checked::Compared(reference.compare(&got)))
}

/// A C driver for `convjit_NAME`: `driver IN OUT N_IN N_OUT BATCH`.
fn driver_source(name: &str) -> String {
    let name = crate::c_identifier(name);
    format!(
        r#"#include <stdio.h>
#include <stdlib.h>
int convjit_{name}(const float *input, float *output, size_t batch);
int main(int argc, char **argv) {{
  if (argc != 6) return 2;
  size_t n_in = strtoul(argv[3], 0, 10), n_out = strtoul(argv[4], 0, 10);
  size_t batch = strtoul(argv[5], 0, 10);
  float *in = malloc(n_in * sizeof *in), *out = malloc(n_out * sizeof *out);
  FILE *f = fopen(argv[1], "rb");
  if (!in || !out || !f || fread(in, sizeof *in, n_in, f) != n_in) return 3;
  fclose(f);
  int rc = convjit_{name}(in, out, batch);
  if (rc != 0) {{ fprintf(stderr, "convjit_{name} returned %d\n", rc); return 4; }}
  f = fopen(argv[2], "wb");
  if (!f || fwrite(out, sizeof *out, n_out, f) != n_out || fclose(f) != 0) return 5;
  return 0;
}}
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_round_trip_through_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v.f32");
        let v = [1.5f32, -0.0, f32::INFINITY, 3e-39];
        write_f32(&p, &v).unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 16);
        let back = read_f32(&p).unwrap();
        assert_eq!(back.len(), 4);
        for (a, b) in back.iter().zip(&v) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }

    #[test]
    fn a_missing_object_is_a_setup_error() {
        let l = convjit_ir::compile_source("layer l { input 2x2x1\n d: depthwise 1x1 }")
            .unwrap()
            .remove(0);
        let w = Weights::random(&l, 1);
        let e = check_object(
            (&l, &w),
            Path::new("/no/such.o"),
            "cc",
            (&[0.0; 4], 1),
            Precision::F32,
        );
        assert!(
            matches!(&e, Err(ObjectError::Setup(m)) if m == "no such object file"),
            "{e:?}"
        );
    }

    #[test]
    fn outputs_of_the_wrong_length_are_named() {
        let l = convjit_ir::compile_source("layer l { input 2x2x1\n d: depthwise 1x1 }")
            .unwrap()
            .remove(0);
        let w = Weights::random(&l, 1);
        let x = [1.0f32; 4];
        let e = compare_with_interpreter(&l, &w, &x, 1, &[0.0; 3]).unwrap_err();
        assert_eq!(e, "3 outputs, expected 4");
        let want = convjit_ir::interpret(&l, &w, &x, 1).unwrap();
        assert!(compare_with_interpreter(&l, &w, &x, 1, &want)
            .unwrap()
            .pass());
    }
}
