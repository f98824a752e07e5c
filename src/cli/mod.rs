//! Argument parsing and dispatch. Exit status: 0 success, 1 the user's
//! input is wrong, 2 a usage error (clap's own status for bad flags).

mod bench;
mod build;
mod check;
mod fuzz;
mod import;
mod plan;
mod progress;
mod roofline;
mod run;
mod verify;

use clap::{Parser, Subcommand};
pub use convjit::plan_text::{pad, thousands, Align};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "convjit",
    version,
    about = "A code-generating compiler for convolution kernels",
    long_about = "convjit reads layers written in the .conv language (shapes, kernels, strides, \
                  padding, separability, multiplier, bias, activation, residual), checks them, \
                  and runs them."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Parse and validate; print each layer's stages and shapes.
    Check {
        /// The .conv file.
        file: PathBuf,
    },
    /// Print the plan: stages, shapes, fusion groups, bands, threads, register
    /// blocking, and multiply-accumulates, with the planner's reasons.
    Plan {
        file: PathBuf,
        /// The layer to plan (default: every layer of the file).
        #[arg(long)]
        layer: Option<String>,
        /// One JSON object per layer, one per line.
        #[arg(long)]
        json: bool,
        /// The layer's weights: a stage whose kernels they show to have
        /// rank 1 is planned as two 1-D stages (needs one layer: --layer).
        #[arg(long, value_name = "W.npz")]
        weights: Option<PathBuf>,
        #[command(flatten)]
        planner: PlannerArgs,
    },
    /// Run a layer. Without --input or --weights, seeded random data is used.
    Run(run::RunArgs),
    /// Emit the compiled kernel: an ELF object and a C header beside it.
    Build(build::BuildArgs),
    /// Time the generated kernel against the interpreter (GFLOP/s, compile time).
    Bench(bench::BenchArgs),
    /// Check every generated kernel against the interpreter on seeded
    /// random data: worst error, tolerance, PASS/FAIL per generator.
    Verify(verify::VerifyArgs),
    /// Random small layers through every code generator against the
    /// interpreter; shrunk reproducers of mismatches in fuzz-failures/.
    Fuzz(fuzz::FuzzArgs),
    /// Write an ONNX model's convolution chains as a .conv file (one layer
    /// per chain) and their weights; print what was and was not taken.
    Import(import::ImportArgs),
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version go to stdout with status 0; usage errors
            // status 2. clap quotes a bad value whole: a line of it is cut
            // to a screenful, however long the argument.
            if e.use_stderr() {
                eprint!("{}", bounded_lines(&e.render().to_string(), MAX_ERROR_LINE));
            } else {
                let _ = e.print();
            }
            return ExitCode::from(e.exit_code().clamp(0, 255) as u8);
        }
    };
    let result = match cli.command {
        Command::Check { file } => check::check(&file),
        Command::Plan {
            file,
            layer,
            json,
            weights,
            planner,
        } => planner
            .options()
            .and_then(|o| plan::plan(&file, layer.as_deref(), weights.as_deref(), json, &o)),
        Command::Run(args) => run::run(&args),
        Command::Build(args) => build::build(&args),
        Command::Bench(args) => bench::bench(&args),
        Command::Verify(args) => verify::verify(&args),
        Command::Fuzz(args) => fuzz::fuzz(&args),
        Command::Import(args) => import::import(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Quiet(status)) => ExitCode::from(status),
        Err(e) => {
            eprintln!("{}", e.render());
            ExitCode::from(e.status())
        }
    }
}

/// Characters of one line of a usage error, at most.
const MAX_ERROR_LINE: usize = 300;

/// `text` with every line longer than `max` characters cut there, saying
/// how much was left out.
fn bounded_lines(text: &str, max: usize) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let n = line.chars().count();
        if n <= max {
            out.push_str(line);
        } else {
            out.extend(line.chars().take(max));
            out.push_str(&format!("... ({} more characters)\n", n - max));
        }
    }
    out
}

/// Overrides of the planner's choices, for experiments.
#[derive(clap::Args, Clone)]
pub struct PlannerArgs {
    /// Run every stage on its own (no fusion).
    #[arg(long, conflicts_with = "fuse_all")]
    no_fuse: bool,
    /// Fuse all stages of the layer into one group.
    #[arg(long)]
    fuse_all: bool,
    /// Threads sharing the work (default: every core; the planner keeps one
    /// thread where a second would not pay).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: Option<u32>,
    /// Force the height of row bands (output rows of a fused group's last stage).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    band_rows: Option<u32>,
    /// The code generator: auto (the widest the CPU runs), cranelift, avx2, avx512.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    backend: convjit::Backend,
    /// The arithmetic: f32, or bf16 (weights and stage inputs rounded to
    /// bf16 where they enter a multiply, f32 sums; needs AVX512_BF16).
    #[arg(long, default_value = "f32", value_parser = parse_precision)]
    precision: convjit::Precision,
    /// In bf16, keep every intermediate in f32: by default a stage that
    /// stores whole vectors, read by a depthwise stage or by one on
    /// channel pairs, stores bf16, which the reader widens or reads as its
    /// pairs (the same values, half the bytes).
    #[arg(long)]
    f32_intermediates: bool,
    /// In bf16, what runs conv, pointwise and grouped stages: auto (AMX
    /// tiles where they fill, else vdpbf16ps on AMD for stages of 16 input
    /// channels or more and f32 FMAs on Intel), tiles (AMX where they fill,
    /// else FMAs), dot (vdpbf16ps for every one, AVX512_BF16, never tiles),
    /// fma (f32 FMAs on bf16 values). Depthwise stages always run FMAs.
    #[arg(long, default_value = "auto", value_parser = parse_bf16_units)]
    bf16_units: convjit::Bf16Units,
    #[command(flatten)]
    separate: SeparateArgs,
    /// Run 3x3 stride-1 convs (alone, or as stages of a longer layer: it is
    /// then cut into kernels there) as Winograd's F(4x4, 3x3) (36 products
    /// per 4x4 outputs instead of 144) or F(2x2, 3x3) (16 per 2x2 instead
    /// of 36, where 4x4 tiles would waste more of the image), and 5x5
    /// stride-1 convs as F(2x2, 5x5) (36 per 2x2 instead of 100), rounded
    /// differently from the direct sum (within the bound `verify
    /// --winograd` checks); f32 only. `--winograd` (auto): where it pays
    /// (16 channels a side and 2M multiply-accumulates or more; tiles
    /// covering at most 25% more outputs than the layer has, unless 256
    /// channels a side); `--winograd=always`: whenever it can.
    /// `plan` says whether it runs, how and why.
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "auto",
          value_name = "WHEN", value_parser = parse_winograd)]
    winograd: Option<convjit::Winograd>,
    /// With --winograd, the output tile side of every 3x3 Winograd stage:
    /// 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)); by default chosen per stage. A
    /// 5x5 conv runs F(2x2, 5x5), its one form, either way.
    #[arg(long, value_name = "M", requires = "winograd", value_parser = parse_winograd_tile)]
    winograd_tile: Option<usize>,
}

/// Whether kernels of rank 1 found in the weights run as two 1-D stages.
#[derive(clap::Args, Clone)]
pub struct SeparateArgs {
    /// Run every stage whole, even where its kernels have rank 1 (by
    /// default, with weights given, such a stage runs as Khx1 then 1xKw).
    #[arg(long, conflicts_with = "separate_rank")]
    no_separate: bool,
    /// Approximate every depthwise kernel (and every kernel of a conv on
    /// one channel) by its best rank-R sum (SVD), run as R Khx1 filters then
    /// a 1xKw conv summing them, where that saves work: an approximation,
    /// whose relative error on the weights `plan` prints.
    #[arg(long, value_name = "R", value_parser = clap::value_parser!(u32).range(1..=64))]
    separate_rank: Option<u32>,
}

impl SeparateArgs {
    pub fn separation(&self) -> convjit::Separation {
        match (self.no_separate, self.separate_rank) {
            (true, _) => convjit::Separation::Off,
            (false, Some(r)) => convjit::Separation::Rank(r as usize),
            (false, None) => convjit::Separation::Exact,
        }
    }

    /// `layer` and `weights` with stages separated as asked.
    pub fn apply(&self, layer: &convjit::Layer, weights: &convjit::Weights) -> convjit::Separated {
        convjit::separate(layer, weights, self.separation())
    }
}

fn parse_backend(s: &str) -> Result<convjit::Backend, String> {
    convjit::Backend::parse(s)
        .ok_or_else(|| format!("'{s}' is not a code generator (auto, cranelift, avx2, avx512)"))
}

/// Every generator the host runs that computes `precision` (`verify
/// --backend all`, `fuzz`); none is an error that says why.
pub fn backends_computing(precision: convjit::Precision) -> Result<Vec<convjit::Backend>, Failure> {
    let all = convjit::Backend::available();
    let why = all.iter().find_map(|b| b.check_precision(precision).err());
    let computing: Vec<convjit::Backend> = all
        .into_iter()
        .filter(|b| b.check_precision(precision).is_ok())
        .collect();
    match (computing.is_empty(), why) {
        (true, Some(why)) => Err(Failure::Input(convjit::Error::Jit(
            convjit::JitError::Unsupported(why),
        ))),
        _ => Ok(computing),
    }
}

pub fn parse_bf16_units(s: &str) -> Result<convjit::Bf16Units, String> {
    convjit::Bf16Units::ALL
        .into_iter()
        .find(|u| u.name() == s)
        .ok_or_else(|| format!("'{s}' is not a choice of bf16 units (auto, tiles, dot, fma)"))
}

/// `--winograd[=auto|always]`'s value.
pub fn parse_winograd(s: &str) -> Result<convjit::Winograd, String> {
    match s {
        "auto" => Ok(convjit::Winograd::Auto),
        "always" => Ok(convjit::Winograd::Always),
        _ => Err(format!("'{s}' is not a choice (auto, always)")),
    }
}

/// `--winograd-tile`'s value: 2 or 4.
pub fn parse_winograd_tile(s: &str) -> Result<usize, String> {
    match s {
        "2" => Ok(2),
        "4" => Ok(4),
        _ => Err(format!("'{s}' is not a Winograd tile (2, 4)")),
    }
}

pub fn parse_precision(s: &str) -> Result<convjit::Precision, String> {
    convjit::Precision::parse(s).ok_or_else(|| format!("'{s}' is not a precision (f32, bf16)"))
}

impl PlannerArgs {
    pub fn options(&self) -> Result<convjit::Options, Failure> {
        // Options that change nothing in f32 say so rather than pass silently.
        if self.precision == convjit::Precision::F32 {
            if self.bf16_units != convjit::Bf16Units::default() {
                eprintln!("note: --bf16-units applies with --precision bf16 only: ignored");
            }
            if self.f32_intermediates {
                eprintln!("note: --f32-intermediates applies with --precision bf16 only: ignored");
            }
        } else if self.winograd.is_some_and(|w| w != convjit::Winograd::Off) {
            eprintln!("note: Winograd runs in f32 only: in bf16 every stage runs direct code");
        }
        Ok(convjit::Options {
            fuse: if self.no_fuse {
                convjit::Fusion::Never
            } else if self.fuse_all {
                convjit::Fusion::Always
            } else {
                convjit::Fusion::Auto
            },
            threads: self
                .threads
                .map_or(convjit::Options::default().threads, |t| t as usize),
            band_rows: self.band_rows.map(|b| b as usize),
            backend: self.backend,
            separate: self.separate.separation(),
            precision: self.precision,
            bf16_intermediates: !self.f32_intermediates,
            bf16_units: self.bf16_units,
            winograd: self.winograd.unwrap_or_default(),
            winograd_tile: self.winograd_tile,
            ..convjit::Options::default()
        })
    }
}

/// A command's failure: the user's input (status 1) or its usage (status 2).
pub enum Failure {
    Input(convjit::Error),
    Usage(String),
    /// Already reported on stdout (a check that failed): only the status.
    Quiet(u8),
}

impl Failure {
    fn render(&self) -> String {
        match self {
            // Source errors are already "FILE:LINE:COL: error: ...".
            Failure::Input(e @ convjit::Error::Source { .. }) => e.to_string(),
            Failure::Input(
                e @ convjit::Error::Jit(
                    convjit::JitError::TooLarge(_) | convjit::JitError::Unsupported(_),
                ),
            ) => format!("error: {e}"),
            Failure::Input(e @ convjit::Error::Jit(_)) => format!("internal error: {e}"),
            Failure::Input(e) => format!("error: {e}"),
            Failure::Usage(m) => format!("error: {m}"),
            Failure::Quiet(_) => String::new(),
        }
    }

    fn status(&self) -> u8 {
        match self {
            Failure::Input(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Quiet(status) => *status,
        }
    }
}

impl From<convjit::Error> for Failure {
    fn from(e: convjit::Error) -> Failure {
        match e {
            // Choosing a layer is part of the command line.
            convjit::Error::NoSuchLayer { message } => Failure::Usage(message),
            e => Failure::Input(e),
        }
    }
}

impl From<convjit::DataError> for Failure {
    fn from(e: convjit::DataError) -> Failure {
        Failure::Input(e.into())
    }
}

/// The outputs of a command that reads `inputs`: `(flag, path)` each,
/// checked before anything is read (an output that is an input, or two
/// that collide, is a usage error). Returns the transaction and each
/// output's index.
fn outputs(
    targets: &[(&str, &Path)],
    inputs: &[(&str, &Path)],
) -> Result<(convjit::npy::Outputs, Vec<usize>), Failure> {
    let mut out = convjit::npy::Outputs::new();
    let mut ids = Vec::with_capacity(targets.len());
    for (flag, path) in targets {
        ids.push(out.add(flag, path, inputs).map_err(Failure::from)?);
    }
    Ok((out, ids))
}

impl From<convjit::npy::OutputError> for Failure {
    fn from(e: convjit::npy::OutputError) -> Failure {
        match e {
            convjit::npy::OutputError::Usage(m) => Failure::Usage(m),
            convjit::npy::OutputError::Io { path, message } => {
                Failure::Input(convjit::Error::Io { path, message })
            }
        }
    }
}

impl From<convjit::npy::Error> for Failure {
    fn from(e: convjit::npy::Error) -> Failure {
        Failure::Input(convjit::DataError::from(e).into())
    }
}

/// The layers of `file`, all of them or the one named.
fn layers(file: &std::path::Path, name: Option<&str>) -> Result<Vec<convjit::Layer>, Failure> {
    layers_for(file, name, false)
}

/// [`layers`], but exactly one when `weighted` (weights belong to one
/// layer: the one named, or the file's only one).
fn layers_for(
    file: &std::path::Path,
    name: Option<&str>,
    weighted: bool,
) -> Result<Vec<convjit::Layer>, Failure> {
    let all = convjit::load_layers(file)?;
    Ok(if weighted || name.is_some() {
        vec![convjit::select_layer(all, name)?]
    } else {
        all
    })
}
