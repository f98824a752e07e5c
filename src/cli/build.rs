//! `convjit build FILE.conv [--layer NAME] -o OUT.o [--weights W.npz]
//! [--emit obj|clif|asm] [--target TRIPLE]`: a kernel as an ELF object and
//! a C header beside it (`k.o` -> `k.h`), or its IR / assembly as text.

use super::Failure;
use clap::{Args, ValueEnum};
use convjit_aot::{AotError, BuildOptions, Emit};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct BuildArgs {
    file: PathBuf,
    /// The layer to build (needed when the file holds several).
    #[arg(long)]
    layer: Option<String>,
    /// The object file to write; the header goes beside it (`k.o` -> `k.h`).
    #[arg(short = 'o', long, value_name = "OUT.o")]
    output: PathBuf,
    /// Bake these weights into the object (else the kernel takes them at run time).
    #[arg(long, value_name = "W.npz")]
    weights: Option<PathBuf>,
    /// What to write: an object file and header, Cranelift IR, or assembly.
    #[arg(long, value_enum, default_value_t = EmitKind::Obj)]
    emit: EmitKind,
    /// Target triple (default: this machine, with all its CPU features).
    /// Supported: x86_64-unknown-linux-gnu, aarch64-unknown-linux-gnu.
    #[arg(long, value_name = "TRIPLE")]
    target: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitKind {
    Obj,
    Clif,
    Asm,
}

pub fn build(a: &BuildArgs) -> Result<(), Failure> {
    let layer = convjit::select_layer(convjit::load_layers(&a.file)?, a.layer.as_deref())?;
    let weights = match &a.weights {
        Some(path) => Some(convjit::load_weights(&layer, path)?),
        None => None,
    };
    let emit = match a.emit {
        EmitKind::Obj => Emit::Object,
        EmitKind::Clif => Emit::Clif,
        EmitKind::Asm => Emit::Asm,
    };
    let opts = BuildOptions {
        target: a.target.clone(),
        weights,
    };
    let artifact = convjit_aot::build(&layer, &opts, emit).map_err(|e| match e {
        AotError::Target(m) => Failure::Usage(m),
        AotError::Data(d) => d.into(),
        e => Failure::Input(convjit::Error::Io {
            path: a.file.clone(),
            message: format!("cannot build layer '{}': {e}", layer.name),
        }),
    })?;
    if !matches!(a.emit, EmitKind::Obj) {
        return write(&a.output, &artifact.object);
    }
    let header = a.output.with_extension("h");
    if header == a.output {
        return Err(Failure::Usage(format!(
            "the object file {} would overwrite its header: name it k.o",
            a.output.display()
        )));
    }
    write(&header, artifact.header.as_bytes())?;
    // Both files or neither.
    write(&a.output, &artifact.object).inspect_err(|_| {
        let _ = std::fs::remove_file(&header);
    })?;
    eprintln!(
        "wrote {} and {} ({})",
        a.output.display(),
        header.display(),
        artifact.symbol
    );
    Ok(())
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), Failure> {
    convjit::npy::write_atomic(path, bytes)
        .map_err(|e| Failure::Input(convjit::DataError::from(e).into()))
}
