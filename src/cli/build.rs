//! `convjit build FILE.conv [--layer NAME] -o OUT.o [--weights W.npz]
//! [--emit obj|clif|asm] [--target TRIPLE] [--cpu LEVEL] [--backend B]`: a
//! kernel as an ELF object and a C header beside it (`k.o` -> `k.h`), or
//! its IR / assembly as text. How `--cpu` and `--backend` combine:
//! `convjit_aot::choice`.
//!
//! The object and its header are one promise (CONTRACT.md: "an ELF
//! object ... and a C header beside it with the same stem"), so an object
//! to a device (`-o /dev/null`) is a usage error: its header would be a
//! new regular file among the devices (`/dev/null.h`), and a build that
//! silently skipped it would break the promise. A FIFO object is fine: its
//! header is an ordinary file beside it. `--emit asm -o /dev/null` checks
//! that a layer builds without writing anything.

use super::Failure;
use clap::{Args, ValueEnum};
use convjit_aot::{AotError, BuildOptions, Cpu, Emit};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct BuildArgs {
    file: PathBuf,
    /// The layer to build (needed when the file holds several).
    #[arg(long)]
    layer: Option<String>,
    /// The object file to write; the header goes beside it (`k.o` -> `k.h`),
    /// so not a device such as /dev/null (with --emit asm or clif it may be).
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
    /// x86_64 only: the CPU level the object needs: x86-64-v3 (AVX2, FMA),
    /// x86-64-v4 (AVX-512F), sapphirerapids (x86-64-v4, AVX512_BF16, AMX),
    /// znver4 (x86-64-v4, AVX512_BF16) or native (this machine's). Default:
    /// native for a build for this machine, else x86-64-v3 (x86-64-v4 with
    /// --backend avx512).
    #[arg(long, value_name = "LEVEL", value_parser = parse_cpu)]
    cpu: Option<Cpu>,
    /// The stage functions' code generator: auto (the widest the CPU level
    /// has), cranelift, avx2, avx512 (x86_64 only).
    #[arg(long, default_value = "auto", value_parser = super::parse_backend)]
    backend: convjit::Backend,
    /// The arithmetic: f32, or bf16 (needs a CPU with AVX512_BF16:
    /// --cpu sapphirerapids, znver4, or native on such a machine).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    precision: convjit::Precision,
    /// With --weights: whether stages whose kernels have rank 1 are built
    /// as Khx1 then 1xKw.
    #[command(flatten)]
    separate: super::SeparateArgs,
}

/// Whether `path` (symbolic links followed) is a character or block device.
fn is_device(path: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        std::fs::metadata(path).is_ok_and(|m| {
            let t = m.file_type();
            t.is_char_device() || t.is_block_device()
        })
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        false
    }
}

fn parse_cpu(s: &str) -> Result<Cpu, String> {
    Cpu::parse(s).ok_or_else(|| {
        let names: Vec<&str> = Cpu::ALL.iter().map(|c| c.name()).collect();
        format!("'{s}' is not a CPU level ({})", names.join(", "))
    })
}

#[derive(Clone, Copy, ValueEnum)]
enum EmitKind {
    Obj,
    Clif,
    Asm,
}

pub fn build(a: &BuildArgs) -> Result<(), Failure> {
    // The outputs, checked against the inputs and each other before
    // anything is read: an object and its header (`k.o` -> `k.h`), or
    // one text file.
    let header = a.output.with_extension("h");
    let mut inputs: Vec<(&str, &Path)> = vec![("the layer file", &a.file)];
    inputs.extend(a.weights.as_deref().map(|w| ("the weights", w)));
    let object = matches!(a.emit, EmitKind::Obj);
    if object && header == a.output {
        return Err(Failure::Usage(format!(
            "the object file {} would overwrite its header: name it k.o",
            a.output.display()
        )));
    }
    if object && is_device(&a.output) {
        return Err(Failure::Usage(format!(
            "-o {} is a device: the header would be written beside it, to {}; \
             name a file (-o k.o writes k.o and k.h), or use --emit asm to only \
             check that the layer builds",
            a.output.display(),
            header.display()
        )));
    }
    let targets: Vec<(&str, &Path)> = if object {
        vec![("-o", &a.output), ("the header", &header)]
    } else {
        vec![("-o", &a.output)]
    };
    let (mut out, ids) = super::outputs(&targets, &inputs)?;

    let layer = convjit::select_layer(convjit::load_layers(&a.file)?, a.layer.as_deref())?;
    // Baked weights are known now: rank-1 stages are built separated.
    let (layer, weights) = match &a.weights {
        Some(path) => {
            let s = a
                .separate
                .apply(&layer, &convjit::load_weights(&layer, path)?);
            for n in s.notes.iter().filter(|n| n.separated) {
                eprintln!("note: {}: {}", n.stage, n.text);
            }
            (s.layer, Some(s.weights))
        }
        None => (layer, None),
    };
    let emit = match a.emit {
        EmitKind::Obj => Emit::Object,
        EmitKind::Clif => Emit::Clif,
        EmitKind::Asm => Emit::Asm,
    };
    let opts = BuildOptions {
        target: a.target.clone(),
        weights,
        cpu: a.cpu,
        backend: a.backend,
        precision: a.precision,
    };
    let artifact = convjit_aot::build(&layer, &opts, emit).map_err(|e| match e {
        AotError::Target(m) | AotError::Usage(m) => Failure::Usage(m),
        AotError::Host(m) | AotError::Precision(m) => {
            Failure::Input(convjit::JitError::Unsupported(m).into())
        }
        AotError::Data(d) => d.into(),
        e => Failure::Input(convjit::Error::Io {
            path: a.file.clone(),
            message: format!("cannot build layer '{}': {e}", layer.name),
        }),
    })?;
    out.write_bytes(ids[0], &artifact.object)?;
    if !object {
        return Ok(out.commit()?);
    }
    out.write_bytes(ids[1], artifact.header.as_bytes())?;
    // Both files or neither.
    out.commit()?;
    eprintln!(
        "wrote {} and {} ({}; stage functions: {}{}{})",
        a.output.display(),
        header.display(),
        artifact.symbol,
        artifact.generator,
        artifact.cpu.map_or(String::new(), |c| format!(", for {c}")),
        match (a.precision, artifact.tiles) {
            (convjit::Precision::F32, _) => String::new(),
            (p, true) => format!(", {p}, conv and pointwise stages on AMX tiles"),
            (p, false) => format!(", {p}"),
        },
    );
    Ok(())
}
