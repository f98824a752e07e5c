//! `convjit import MODEL.onnx [-o OUT.conv] [--weights OUT.npz]
//! [--input-shape HxWxC] [--verbose]`: a model's convolution chains as a
//! `.conv` file (one layer per chain) and their weights (`convjit_onnx`).
//! Why Conv nodes were left out is said once per kind of reason (one
//! note per node with `--verbose`).
//!
//! Weights: one `.npz` per layer, since a layer's archive holds exactly its
//! own keys (`Weights::from_npz` refuses others): `OUT.npz` for a model
//! with one layer, `OUT.LAYER.npz` beside it for each layer otherwise.
//! Nothing is written unless everything is (`convjit_npy::Outputs`).

use super::Failure;
use clap::Args;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ImportArgs {
    /// The ONNX model (a self-contained .onnx file).
    model: PathBuf,
    /// The .conv file to write (default: MODEL with the extension .conv).
    #[arg(short = 'o', long, value_name = "OUT.conv")]
    output: Option<PathBuf>,
    /// The weights archive (default: MODEL with the extension .npz); for a
    /// model of several layers, one archive per layer: OUT.LAYER.npz.
    #[arg(long, value_name = "OUT.npz")]
    weights: Option<PathBuf>,
    /// Height x width x channels of the model's (NCHW) input, where the
    /// model leaves them symbolic; the batch stays free.
    #[arg(long, value_name = "HxWxC", value_parser = parse_hwc)]
    input_shape: Option<[usize; 3]>,
    /// One note per Conv node left out (by default, one per kind of
    /// reason, with the count of nodes).
    #[arg(long)]
    verbose: bool,
}

fn parse_hwc(s: &str) -> Result<[usize; 3], String> {
    let dims: Vec<usize> = s
        .split('x')
        .map(|p| p.parse().ok().filter(|&d| d >= 1))
        .collect::<Option<_>>()
        .ok_or_else(|| format!("'{s}' is not HxWxC (three sizes of at least 1, e.g. 224x224x3)"))?;
    <[usize; 3]>::try_from(dims).map_err(|_| format!("'{s}' is not HxWxC (e.g. 224x224x3)"))
}

/// Prints `FILE: error: MESSAGE`; the status is 1 (the user's input).
fn fail(file: &Path, message: impl std::fmt::Display) -> Failure {
    eprintln!("{}: error: {message}", file.display());
    Failure::Quiet(1)
}

pub fn import(a: &ImportArgs) -> Result<(), Failure> {
    let model = &a.model;
    let conv_path = a
        .output
        .clone()
        .unwrap_or_else(|| model.with_extension("conv"));
    let npz_path = a
        .weights
        .clone()
        .unwrap_or_else(|| model.with_extension("npz"));
    // Usage errors before the model is read: an output that is the model,
    // or -o and --weights in one file.
    let inputs = [("the model", model.as_path())];
    let planned = |targets: &[(&str, &Path)]| {
        super::outputs(targets, &inputs).map_err(|e| match e {
            // Import names the file first, as its other errors do.
            Failure::Input(convjit::Error::Io { path, message }) => fail(&path, message),
            e => e,
        })
    };
    planned(&[("-o", &conv_path), ("--weights", &npz_path)])?;

    // The whole file in one buffer, which initializers' raw_data then
    // share (no copy of the weights while decoding).
    let bytes = convjit_onnx::read_model(model).map_err(|e| fail(model, unstaged(&e)))?;
    let options = convjit_onnx::Options {
        input_shape: a.input_shape,
    };
    let imported = convjit_onnx::import(bytes, &options).map_err(|e| fail(model, e))?;
    let notes = if a.verbose {
        imported.notes.clone()
    } else {
        imported.note_summary()
    };
    if imported.layers.is_empty() {
        for n in &notes {
            eprintln!("note: {n}");
        }
        return Err(fail(
            model,
            format!(
                "no convolution could be imported ({} Conv node{}); nothing written",
                imported.conv_nodes,
                if imported.conv_nodes == 1 { "" } else { "s" }
            ),
        ));
    }

    let npz_paths: Vec<PathBuf> = if imported.layers.len() == 1 {
        vec![npz_path.clone()]
    } else {
        let stem = npz_path.file_stem().unwrap_or_default().to_string_lossy();
        imported
            .layers
            .iter()
            .map(|l| npz_path.with_file_name(format!("{stem}.{}.npz", l.layer.name)))
            .collect()
    };

    let mut text = format!(
        "# Imported from {} by convjit import: one layer per chain of convolutions.\n",
        file_name(model)
    );
    for (l, npz) in imported.layers.iter().zip(&npz_paths) {
        let _ = write!(text, "\n# weights: {}\n{}", file_name(npz), l.text);
    }

    // Every file is made beside its target and all are put in place
    // together: on any error, nothing of the user's changes. (A layer's
    // archive may collide with -o: a usage error, still before writing.)
    let mut targets: Vec<(&str, &Path)> = vec![("-o", &conv_path)];
    targets.extend(npz_paths.iter().map(|p| ("--weights", p.as_path())));
    let (mut out, ids) = planned(&targets)?;
    out.write_bytes(ids[0], text.as_bytes())
        .map_err(|e| fail(&conv_path, unstaged(&e)))?;
    for (i, npz) in npz_paths.iter().enumerate() {
        // Each array is transposed from the model's buffer as it is written:
        // memory stays near the model's size.
        let arrays = imported.weights(i).map_err(|e| fail(model, e))?;
        out.write(ids[i + 1], |f| convjit::npy::write_npz_to(f, &arrays))
            .map_err(|e| fail(npz, unstaged(&e)))?;
    }
    out.commit().map_err(|e| fail(e.path(), unstaged(&e)))?;

    print!(
        "{}",
        summary(model, &imported, &notes, &npz_paths, &conv_path)
    );
    Ok(())
}

/// What was imported, what was not and why, and the files written.
fn summary(
    model: &Path,
    imported: &convjit_onnx::Import,
    notes: &[String],
    npz_paths: &[PathBuf],
    conv_path: &Path,
) -> String {
    let taken: usize = imported.layers.iter().map(|l| l.layer.stages.len()).sum();
    let mut out = format!(
        "{}: {} layer{}, {taken} of {} Conv nodes",
        model.display(),
        imported.layers.len(),
        if imported.layers.len() == 1 { "" } else { "s" },
        imported.conv_nodes
    );
    match imported.folded_nodes {
        0 => {}
        1 => out += " (1 node folded into a constant)",
        n => out += &format!(" ({n} nodes folded into constants)"),
    }
    out.push('\n');
    let width = imported
        .layers
        .iter()
        .map(|l| l.layer.name.chars().count())
        .max()
        .unwrap_or(0);
    for (l, npz) in imported.layers.iter().zip(npz_paths) {
        let _ = writeln!(
            out,
            "  {}  {} -> {}, {} stage{} ('{}' -> '{}')  {}",
            super::pad(&l.layer.name, width, super::Align::Left),
            l.layer.input,
            l.layer.output(),
            l.layer.stages.len(),
            if l.layer.stages.len() == 1 { "" } else { "s" },
            convjit_onnx::shown(&l.input),
            convjit_onnx::shown(&l.output),
            npz.display()
        );
    }
    if let Some(line) = imported.skipped_line() {
        out += &line;
        out.push('\n');
    }
    for n in notes {
        let _ = writeln!(out, "note: {n}");
    }
    let _ = writeln!(out, "wrote {}", conv_path.display());
    out
}

/// A write error without the temporary path it names (the user knows the
/// target, printed before it).
fn unstaged(e: &convjit::npy::Error) -> String {
    let text = e.to_string();
    let prefix = format!("{}: ", e.path().display());
    text.strip_prefix(&prefix).unwrap_or(&text).to_string()
}

fn file_name(p: &Path) -> String {
    p.file_name()
        .unwrap_or(p.as_os_str())
        .to_string_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn input_shapes_parse() {
        assert_eq!(super::parse_hwc("224x224x3"), Ok([224, 224, 3]));
        for bad in ["224x224", "0x1x1", "axbxc", "1x2x3x4", ""] {
            assert!(super::parse_hwc(bad).is_err(), "{bad}");
        }
    }
}
