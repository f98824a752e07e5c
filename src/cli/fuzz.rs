//! `convjit fuzz [--cases N | --seconds S] [--seed S] [--threads T]`: random
//! small layers (the generator the JIT's property tests use,
//! `convjit_ir::random_layer`) through every code generator the host runs,
//! each against the interpreter. A mismatch, a failure or a panic is shrunk
//! with proptest's value tree and written to `fuzz-failures/` as a `.conv`
//! file whose comments give the seed, the data and the generator. The last
//! line is `N layers, M mismatches`; exit 1 when M > 0.
//!
//! A panic is caught (`catch_unwind`); a fault in generated code is a
//! signal that kills the process, which this in-process loop cannot catch:
//! the case being run is then the one printed by `--verbose`.
//!
//! Drawing and shrinking cases is `convjit_ir::random_layer`'s
//! ([`case_runner`], [`draw_valid`], [`shrink`]), checking one the
//! library's (`convjit::verify::Trial`); this file runs the loop on its
//! threads and reports.

use super::Failure;
use clap::Args;
use convjit::verify::Trial;
use convjit::{Backend, Bf16Units, Fusion, Options, Precision, Winograd};
use convjit_ir::random_layer::{
    case_runner, draw_valid, layer_case, shrink, winograd_case, winograd_chain_case, LayerCase,
    Limits,
};
use indicatif::ProgressBar;
use proptest::strategy::{Strategy, ValueTree};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct FuzzArgs {
    /// Layers to check (default 1000 unless --seconds is given).
    #[arg(long, conflicts_with = "seconds", value_parser = clap::value_parser!(u64).range(1..))]
    cases: Option<u64>,
    /// Check layers for this long instead of a fixed number.
    #[arg(long)]
    seconds: Option<f64>,
    /// Seed of the whole run: case i of seed S is the same on every machine.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads checking cases in parallel.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=256))]
    threads: u32,
    /// Where reproducers are written.
    #[arg(long, default_value = "fuzz-failures", value_name = "DIR")]
    out: PathBuf,
    /// Print each case's layer text (on stderr) before checking it.
    #[arg(long)]
    verbose: bool,
    /// The arithmetic checked (bf16: every generator that computes it,
    /// against the bf16 interpreter and within bf16's bound of f32's).
    #[arg(long, default_value = "f32", value_parser = super::parse_precision)]
    precision: Precision,
    /// With bf16, what runs conv, pointwise and grouped stages: auto,
    /// tiles, dot, fma (as `plan --bf16-units`).
    #[arg(long, default_value = "auto", value_parser = super::parse_bf16_units)]
    bf16_units: Bf16Units,
    /// Check Winograd's F(2x2, 3x3), F(4x4, 3x3) (each case one, by its
    /// seed) and F(2x2, 5x5) instead: random lone 3x3 and 5x5 stride-1
    /// convs and layers of several stages around 3x3 ones (`random_layer::winograd_case`,
    /// `winograd_chain_case`), run as `--winograd=always
    /// --winograd-tile M`, within its bound
    /// (`convjit::winograd::chain_magnitude`). f32 only.
    #[arg(long)]
    winograd: bool,
}

/// What the workers add up.
#[derive(Default)]
struct Totals {
    layers: u64,
    mismatches: u64,
    /// Time in each generator (compile + run + compare), and in the interpreter.
    per_backend: Vec<Duration>,
    interpreter: Duration,
}

pub fn fuzz(a: &FuzzArgs) -> Result<(), Failure> {
    let deadline = match a.seconds {
        Some(s) if s > 0.0 && s <= 86_400.0 => Some(Instant::now() + Duration::from_secs_f64(s)),
        Some(_) => return Err(Failure::Usage("--seconds must be in (0, 86400]".into())),
        None => None,
    };
    let cases = if deadline.is_some() {
        u64::MAX
    } else {
        a.cases.unwrap_or(1000)
    };
    if a.winograd && a.precision != Precision::F32 {
        return Err(Failure::Usage("--winograd checks f32 only".into()));
    }
    check_out_dir(&a.out)?;
    let backends = super::backends_computing(a.precision)?;
    let names: Vec<&str> = backends.iter().map(|b| b.name()).collect();
    let units = match a.precision {
        Precision::Bf16 => format!(" ({} units)", a.bf16_units.name()),
        _ => String::new(),
    };
    let l = limits(a);
    let kernels = match a.winograd {
        true => "3x3 convs (alone and in longer layers) as Winograd's F(2x2, 3x3) and F(4x4, 3x3), 5x5 convs as F(2x2, 5x5)"
            .to_string(),
        false => format!("{k}x{k} kernels", k = l.kernel - 1),
    };
    eprintln!(
        "fuzz: seed {}, {} thread(s), {}{units}, generators {}, layers up to {}x{}x{}, {kernels}",
        a.seed,
        a.threads,
        a.precision,
        names.join(", "),
        l.size - 1,
        l.width - 1,
        l.channels - 1,
    );
    // Panics are caught and reported per case: keep the default hook's
    // message from interleaving with the report.
    std::panic::set_hook(Box::new(|_| {}));
    let next = AtomicU64::new(0);
    let totals = Mutex::new(Totals {
        per_backend: vec![Duration::ZERO; backends.len()],
        ..Totals::default()
    });
    let start = Instant::now();
    // Steps: layers with --cases, seconds with --seconds.
    let bar = match a.seconds {
        Some(s) => super::progress::bar(s.ceil() as u64, "fuzz (seconds)"),
        None => super::progress::bar(cases, "fuzz"),
    };
    std::thread::scope(|scope| {
        for _ in 0..a.threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= cases || deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let r = run_case(a, i, &backends, &bar);
                let mut t = totals.lock().unwrap_or_else(|e| e.into_inner());
                t.layers += 1;
                t.mismatches += u64::from(r.failed);
                for (sum, d) in t.per_backend.iter_mut().zip(&r.per_backend) {
                    *sum += *d;
                }
                t.interpreter += r.interpreter;
                let done = t.layers;
                let mismatches = t.mismatches;
                drop(t);
                match a.seconds {
                    Some(_) => bar.set_position(start.elapsed().as_secs()),
                    None => bar.inc(1),
                }
                if done.is_multiple_of(64) || mismatches > 0 {
                    bar.set_message(format!("{done} layers, {mismatches} mismatches"));
                }
            });
        }
    });
    bar.finish_and_clear();
    let _ = std::panic::take_hook();
    let elapsed = start.elapsed().as_secs_f64();
    let t = totals.into_inner().unwrap_or_else(|e| e.into_inner());
    println!(
        "{:.0} layers/s ({} layers in {elapsed:.1} s, {} thread(s), each layer through {} generator(s) and the interpreter)",
        t.layers as f64 / elapsed,
        t.layers,
        a.threads,
        backends.len()
    );
    // What one core spends per layer in each generator plus the interpreter.
    let per: Vec<String> = backends
        .iter()
        .zip(&t.per_backend)
        .map(|(b, d)| {
            let secs = (*d + t.interpreter).as_secs_f64();
            format!("{} {:.0}", b.name(), t.layers as f64 / secs.max(1e-9))
        })
        .collect();
    println!(
        "layers/s per generator on one core, interpreter included: {}",
        per.join(", ")
    );
    println!("{} layers, {} mismatches", t.layers, t.mismatches);
    if t.mismatches > 0 {
        return Err(Failure::Quiet(1));
    }
    Ok(())
}

struct CaseResult {
    failed: bool,
    per_backend: Vec<Duration>,
    interpreter: Duration,
}

/// The sizes cases are drawn within: Winograd's a few tiles and channel
/// vectors across (its bands, edge tiles and channel tails).
fn limits(a: &FuzzArgs) -> Limits {
    match a.winograd {
        true => Limits {
            size: 12,
            width: 12,
            channels: 40,
            ..Limits::SMALL
        },
        false => Limits::SMALL,
    }
}

/// Case `i` of the run: its value tree (to shrink) and its layer.
fn draw(a: &FuzzArgs, i: u64) -> (BoxedTree, convjit::Layer) {
    let mut runner = case_runner(a.seed, i);
    match a.winograd {
        // Lone convs and longer layers around them, in turn.
        true if i.is_multiple_of(2) => draw_valid(&winograd_case(limits(a)).boxed(), &mut runner),
        true => draw_valid(&winograd_chain_case(limits(a)).boxed(), &mut runner),
        false => draw_valid(&layer_case(limits(a)).boxed(), &mut runner),
    }
}

type BoxedTree = Box<dyn ValueTree<Value = LayerCase>>;

/// A Winograd case's output tile side for its 3x3 convs: 2 or 4, by its
/// seed (a 5x5 conv runs F(2x2, 5x5) either way).
fn winograd_tile(case: &LayerCase) -> usize {
    [2, 4][(case.seed / 3 % 2) as usize]
}

fn options(case: &LayerCase, backend: Backend, a: &FuzzArgs) -> Options {
    Options {
        backend,
        bf16_units: a.bf16_units,
        winograd: match a.winograd {
            true => Winograd::Always,
            false => Winograd::Off,
        },
        winograd_tile: a.winograd.then(|| winograd_tile(case)),
        // Fusion varies with the case (threads stay 1: a thread pool per
        // layer would cost more than the layer).
        fuse: [Fusion::Auto, Fusion::Always, Fusion::Never][(case.seed % 3) as usize],
        ..Options::default()
    }
}

fn run_case(a: &FuzzArgs, i: u64, backends: &[Backend], bar: &ProgressBar) -> CaseResult {
    let (tree, layer) = draw(a, i);
    let case = tree.current();
    if a.verbose {
        bar.suspend(|| eprintln!("case {i}: {}", case.src.replace('\n', " ")));
    }
    let mut result = CaseResult {
        failed: false,
        per_backend: vec![Duration::ZERO; backends.len()],
        interpreter: Duration::ZERO,
    };
    let t = Instant::now();
    let trial = trial(&layer, &case, a);
    result.interpreter = t.elapsed();
    for (k, &backend) in backends.iter().enumerate() {
        let t = Instant::now();
        let outcome = trial.check(&layer, &options(&case, backend, a));
        result.per_backend[k] = t.elapsed();
        if let Some(message) = outcome.mismatch() {
            result.failed = true;
            // A fresh tree each time: one a generator before shrank is
            // no longer this case (its message would be paired with
            // another generator's smallest case).
            let mut tree = draw(a, i).0;
            let (small, message) = shrink(&mut tree, message, |c| fails(c, backend, a));
            let path = write_reproducer(&a.out, a.seed, i, (backend, a), &small, &message);
            bar.suspend(|| {
                eprintln!(
                    "MISMATCH case {i}, {backend}: {message}\n  reproducer: {}",
                    path.as_deref()
                        .map_or("(could not write)".into(), |p| p.display().to_string())
                )
            });
        }
    }
    result
}

/// A case's weights, input and interpreter output in the run's precision;
/// with `--winograd`, Winograd's bound for the tolerance.
fn trial(layer: &convjit::Layer, case: &LayerCase, a: &FuzzArgs) -> Trial {
    let mut t = Trial::new(layer, case.seed, case.batch, case.scale, a.precision);
    if a.winograd {
        let tile = Some(winograd_tile(case));
        let stages: Vec<_> = convjit::winograd_stages(layer, 1, Winograd::Always, tile)
            .iter()
            .map(|r| r.ok().map(|w| w.variant))
            .collect();
        if let Ok(r) = &mut t.reference {
            match convjit::winograd::chain_magnitude(layer, &t.weights, &t.input, t.batch, &stages)
            {
                Ok(m) => r.magnitude = m,
                Err(e) => t.reference = Err(format!("Winograd's bound: {e}")),
            }
        }
    }
    t
}

/// The failure of `backend` on `case`, if it still fails (and validates).
fn fails(case: &LayerCase, backend: Backend, a: &FuzzArgs) -> Option<String> {
    let mut layers = convjit_ir::compile_source(&case.src).ok()?;
    let layer = layers.remove(0);
    trial(&layer, case, a)
        .check(&layer, &options(case, backend, a))
        .mismatch()
}

/// `DIR/seedS-caseI-BACKEND.conv`: the layer, with how to reproduce it in
/// comments (the file itself is valid `.conv`).
/// Refuses an `--out` where no reproducer could be written, before the
/// run rather than at its first mismatch (which would lose the case): the
/// nearest part of the path that exists must be a directory this process
/// can create a file in. Nothing is created where nothing fails.
fn check_out_dir(dir: &Path) -> Result<(), Failure> {
    let shown = dir.display();
    let mut at = dir;
    while !at.exists() {
        at = match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
    }
    if !at.is_dir() {
        return Err(Failure::Usage(format!(
            "--out {shown}: {} is not a directory",
            at.display()
        )));
    }
    let probe = at.join(format!(".convjit-fuzz-probe-{}", std::process::id()));
    match std::fs::File::create_new(&probe) {
        Ok(_) => {
            let _ = std::fs::remove_file(&probe);
            Ok(())
        }
        Err(e) => Err(Failure::Usage(format!(
            "--out {shown}: cannot write in {}: {e}",
            at.display()
        ))),
    }
}

fn write_reproducer(
    dir: &Path,
    seed: u64,
    i: u64,
    (backend, a): (Backend, &FuzzArgs),
    case: &LayerCase,
    message: &str,
) -> Option<PathBuf> {
    std::fs::create_dir_all(dir).ok()?;
    // f32 and the automatic units, the defaults, go unsaid.
    let (suffix, mut flag) = match a.precision {
        Precision::F32 => (String::new(), String::new()),
        p => (format!("-{p}"), format!(" --precision {p}")),
    };
    if a.precision == Precision::Bf16 && a.bf16_units != Bf16Units::Auto {
        flag += &format!(" --bf16-units {}", a.bf16_units.name());
    }
    // Winograd's cases: `fuzz --winograd`, checked by `verify
    // --winograd=always` with the case's tile.
    let (suffix, fuzz_flag, verify_flag) = match a.winograd {
        true => (
            suffix + "-winograd",
            " --winograd".to_string(),
            format!(" --winograd=always --winograd-tile {}", winograd_tile(case)),
        ),
        false => (suffix, String::new(), String::new()),
    };
    let path = dir.join(format!("seed{seed}-case{i}-{backend}{suffix}.conv"));
    let text = format!(
        "# convjit fuzz --seed {seed}{flag}{fuzz_flag}: case {i}, shrunk; the {backend} generator disagrees with the interpreter\n\
         # {}\n\
         # data: batch {}, Weights::random(seed {}), input Rng::new({} ^ 0x5555) * {}, fusion {:?}\n\
         # check: convjit verify FILE --backend {backend}{flag}{verify_flag} (its own seeded data)\n\
         {}",
        message.replace('\n', " "),
        case.batch,
        case.seed,
        case.seed,
        case.scale,
        options(case, backend, a).fuse,
        case.src
    );
    convjit::npy::write_atomic(&path, text.as_bytes()).ok()?;
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::strategy::Strategy;

    /// `convjit fuzz ARGS`' arguments.
    fn args(args: &[&str]) -> FuzzArgs {
        #[derive(clap::Parser)]
        struct Fuzz {
            #[command(flatten)]
            a: FuzzArgs,
        }
        <Fuzz as clap::Parser>::parse_from(std::iter::once("fuzz").chain(args.iter().copied())).a
    }

    /// Case 3 of seed 0.
    fn case3() -> LayerCase {
        layer_case(Limits::SMALL)
            .new_tree(&mut case_runner(0, 3))
            .unwrap()
            .current()
    }

    #[test]
    fn a_reproducer_is_a_valid_conv_file_that_says_how_to_reproduce() {
        let dir = tempfile::tempdir().unwrap();
        let case = case3();
        let path = write_reproducer(
            dir.path(),
            7,
            3,
            (Backend::Cranelift, &args(&[])),
            &case,
            "output 0: x\ny",
        )
        .unwrap();
        assert!(path.ends_with("seed7-case3-cranelift.conv"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.starts_with("# convjit fuzz --seed 7: case 3"),
            "{text}"
        );
        assert!(
            text.contains(&format!("Weights::random(seed {})", case.seed)),
            "{text}"
        );
        assert!(text.ends_with(&case.src));
        // Comments and all, it is the same layer text.
        let parsed = convjit_lang::parse(&text).map(|_| ());
        let original = convjit_lang::parse(&case.src).map(|_| ());
        assert_eq!(parsed.is_ok(), original.is_ok());
    }

    #[test]
    fn a_bf16_reproducer_says_the_precision_and_the_units_it_ran() {
        let dir = tempfile::tempdir().unwrap();
        let case = case3();
        let a = args(&["--precision", "bf16", "--bf16-units", "dot"]);
        assert_eq!(
            options(&case, Backend::Avx512, &a).bf16_units,
            Bf16Units::Dot
        );
        let path = write_reproducer(dir.path(), 7, 3, (Backend::Avx512, &a), &case, "m").unwrap();
        assert!(path.ends_with("seed7-case3-avx512-bf16.conv"));
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            text.contains("--backend avx512 --precision bf16 --bf16-units dot"),
            "{text}"
        );
        // The automatic units go unsaid.
        let a = args(&["--precision", "bf16"]);
        let path = write_reproducer(dir.path(), 7, 3, (Backend::Avx512, &a), &case, "m").unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(!text.contains("--bf16-units"), "{text}");
    }
}
