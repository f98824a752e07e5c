//! `convjit bench FILE.conv [--layer NAME] [--json]`: times the generated
//! kernel against the reference interpreter and the hand-written baselines
//! (`convjit-baselines`: naive loops, 128-bit SSE/FMA, 256-bit AVX2/FMA, the
//! `gemm` crate), per layer, with seeded data, all in one run so their
//! ratios are comparable. In the same interleaved rounds: the kernel from
//! every other code generator the host runs (`jit-cranelift`, `jit-avx2`,
//! `jit-avx512`); in each round after them, FMA loops at each vector width
//! the host has (the machine's ceilings at that moment). The variants
//! write one output while timed, as back-to-back calls do.
//!
//! Over more than one layer (a whole network, one layer per block), it
//! also reports the sum over the layers: per variant that ran on every
//! layer, the sum of its per-layer medians, and, where the layers chain,
//! the layers timed one after another (a "total" block after the layers'
//! tables; with `--json --total`, a last JSON line).

use super::{thousands, Failure};
use clap::Args;
use convjit::{Kernel, Layer, Rng, Weights};
use convjit_baselines::{Baseline, Family, FmaPeak};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// 128-bit FMA peak of the machines this project is measured on (AMD Zen 4,
/// `vfmadd*ps xmm`: 58.7 GFLOP/s); Cranelift's x64 backend emits 128-bit
/// vectors only, so this is the generated code's ceiling.
const PEAK_128_GFLOPS: f64 = 58.7;

#[derive(Args)]
pub struct BenchArgs {
    file: PathBuf,
    /// The layer to time (default: every layer of the file).
    #[arg(long)]
    layer: Option<String>,
    /// One JSON object per layer, one per line.
    #[arg(long)]
    json: bool,
    /// With --json over more than one layer: also print the sum over the
    /// layers, a last line `{"total": true, ...}` (no "layer" key). Off by
    /// default: scripts that add up every line's "jit" median (e.g.
    /// shared/peers/mobilenet_v2_body.py) would count it twice. The text
    /// output always ends with the total.
    #[arg(long, requires = "json")]
    total: bool,
    /// Images per call.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    batch: u64,
    /// Time budget per variant, in seconds (each runs at least 3 samples).
    #[arg(long, default_value_t = 0.5)]
    seconds: f64,
    /// Measure the variants this many times (each a share of the time
    /// budget) and report each one's lowest median, as the peers' script
    /// does: load from other tenants of the machine only slows rounds down.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=100))]
    rounds: u64,
    /// The layer's weights (default: seeded random). Plans that depend on
    /// them (rank-1 kernels separated) are what is timed; needs one layer.
    #[arg(long, value_name = "W.npz")]
    weights: Option<std::path::PathBuf>,
    /// Skip the (slow) interpreter.
    #[arg(long)]
    no_interp: bool,
    /// Skip the hand-written baselines.
    #[arg(long)]
    no_baselines: bool,
    /// Draw a log-log roofline of every layer and variant (SVG), its roofs
    /// the FMA peaks and a memcpy bandwidth measured in the same rounds.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Peer points for the plot, from `peers/bench_peers.py --out-json`
    /// (matched to this run's layers by MAC count).
    #[arg(long, value_name = "results.json", requires = "plot")]
    peers: Option<PathBuf>,
    /// Planner overrides for the "jit" variant (the others are fixed).
    #[command(flatten)]
    planner: super::PlannerArgs,
}

pub fn bench(a: &BenchArgs) -> Result<(), Failure> {
    if !(a.seconds > 0.0 && a.seconds <= 600.0) {
        return Err(Failure::Usage("--seconds must be in (0, 600]".into()));
    }
    let options = a.planner.options()?;
    // The plot's file, checked before minutes of timing.
    let inputs: Vec<(&str, &Path)> = [
        ("the layer file", Some(a.file.as_path())),
        ("the weights", a.weights.as_deref()),
        ("the peers' results", a.peers.as_deref()),
    ]
    .into_iter()
    .filter_map(|(role, p)| Some((role, p?)))
    .collect();
    let targets: Vec<(&str, &Path)> = a.plot.iter().map(|p| ("--plot", p.as_path())).collect();
    let (mut out, ids) = super::outputs(&targets, &inputs)?;
    let peers = match &a.peers {
        Some(path) => Some(read_peers(path)?),
        None => None,
    };
    let mut reports = Vec::new();
    let layers = super::layers_for(&a.file, a.layer.as_deref(), a.weights.is_some())?;
    let bar = super::progress::bar(layers.len() as u64, "bench");
    for layer in &layers {
        bar.set_message(layer.name.clone());
        let weights = match &a.weights {
            Some(path) => Some(convjit::load_weights(layer, path)?),
            None => None,
        };
        let report = bench_layer(layer, weights, &options, a)?;
        // Printed with the bar out of the way (it is on stderr, the report on stdout).
        bar.suspend(|| {
            if a.json {
                println!("{report}");
            } else {
                print!("{}", text(&report));
            }
        });
        bar.inc(1);
        reports.push(report);
    }
    bar.finish_and_clear();
    if reports.len() > 1 {
        let mut sum = total(&reports);
        if layers.windows(2).all(|p| p[1].input == p[0].output()) {
            sum["chained"] = json!(time_chain(&layers, &options, a)?);
        }
        if !a.json {
            print!("{}", total_text(&sum));
        } else if a.total {
            println!("{sum}");
        }
    }
    if let Some(path) = &a.plot {
        let svg = plot(&a.file, &reports, peers.as_ref())?;
        out.write_bytes(ids[0], svg.as_bytes())?;
        out.commit()?;
        if !a.json {
            println!("roofline written to {}", path.display());
        }
    }
    Ok(())
}

fn read_peers(path: &std::path::Path) -> Result<serde_json::Value, Failure> {
    let io = |message: String| {
        Failure::Input(convjit::Error::Io {
            path: path.to_path_buf(),
            message,
        })
    };
    let text = std::fs::read_to_string(path).map_err(|e| io(format!("cannot read: {e}")))?;
    let json: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| io(format!("not JSON ({e})")))?;
    if !json["layers"].is_array() {
        return Err(io(
            "no \"layers\" array: expected the output of bench_peers.py --out-json".into(),
        ));
    }
    Ok(json)
}

/// The roofline of every report's variants (FMA peaks left out: they are
/// the roofs), with peer points.
fn plot(
    file: &std::path::Path,
    reports: &[serde_json::Value],
    peers: Option<&serde_json::Value>,
) -> Result<String, Failure> {
    use super::roofline::{peer_points, svg, Point, Roofs};
    let best = |key: &str| {
        reports
            .iter()
            .filter_map(|r| r[key].as_f64())
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
    };
    let peaks = [128, 256, 512]
        .into_iter()
        .filter_map(|bits| {
            Some((
                format!("fma{bits}-peak"),
                best(&format!("measured_peak_{bits}_gflops"))?,
            ))
        })
        .collect();
    let bandwidth = best("memcpy_gbs").unwrap_or(1.0);
    let roofs = Roofs {
        peaks,
        bandwidth,
        bandwidth_label: format!("memcpy {MEMCPY_MIB} MiB {bandwidth:.1} GB/s"),
    };
    let mut points = Vec::new();
    let mut ours = Vec::new();
    for r in reports {
        let flops = 2.0 * r["macs"].as_f64().unwrap_or(0.0);
        let intensity = flops / r["min_traffic_bytes"].as_f64().unwrap_or(f64::NAN);
        let layer = r["layer"].as_str().unwrap_or("?");
        if r["batch"] == 1 {
            ours.push((
                r["macs"].as_u64().unwrap_or(0),
                intensity,
                layer.to_string(),
            ));
        }
        for v in r["results"].as_array().into_iter().flatten() {
            let name = v["variant"].as_str().unwrap_or("?");
            if name.ends_with("-peak") {
                continue;
            }
            points.push(Point {
                layer: layer.to_string(),
                variant: name.to_string(),
                intensity,
                gflops: v["gflops"].as_f64().unwrap_or(0.0),
                peer: false,
            });
        }
    }
    if let Some(p) = peers {
        points.extend(peer_points(p, &ours));
    }
    svg(
        &format!("convjit roofline: {}", file.display()),
        &points,
        &roofs,
    )
    .map_err(|e| {
        Failure::Input(convjit::Error::Io {
            path: file.to_path_buf(),
            message: format!("cannot draw the roofline: {e}"),
        })
    })
}

/// Bytes copied per memcpy sample (`--plot`'s bandwidth roof): beyond the
/// L2 of the machines measured here, though within some L3s (then the
/// roof is a cache's bandwidth, higher than DRAM's).
const MEMCPY_MIB: usize = 64;

/// The variant that copies the layer's input to its output.
const COPY_IO: &str = "copy-io";

fn bench_layer(
    layer: &Layer,
    given: Option<Weights>,
    options: &convjit::Options,
    a: &BenchArgs,
) -> Result<serde_json::Value, Failure> {
    let batch = a.batch as usize;
    let budget = Duration::from_secs_f64(a.seconds);
    // The input, the shared output, the reference and a baseline's output.
    super::check_batch(layer, batch, 4)?;
    let weights = match &given {
        Some(w) => w.clone(),
        None => Weights::try_random(layer, 1)?,
    };
    let input = Aligned::from(&Rng::new(2).vec(layer.input.len() * batch, 1.0));
    let mut output = Aligned::zeros(layer.output().len() * batch);

    let options = options.clone();
    let kernel = Kernel::compile_with(layer, &weights, &options).map_err(convjit::Error::from)?;
    // What separating the rank-1 stages would give, and whether the cost
    // model takes it (the planned kernel then runs the rewritten layer).
    let weighed = convjit::separation(layer, &weights, &options);
    let separation = match &weighed {
        Ok((s, _)) => s.notes.clone(),
        Err(notes) => notes.clone(),
    };
    let separation_cost = weighed.as_ref().ok().map(|(_, c)| *c);
    let stats = kernel.compile_stats();
    // The same layer again (other weights, same code): a cache hit, which
    // looks the code up and packs the new weights.
    // The fastest of five: a single lookup is a microsecond, as long as
    // one cache miss or page fault. (Given weights again: others might
    // not separate as these do.)
    let other = given.unwrap_or_else(|| Weights::random(layer, 3));
    let mut hit: Option<convjit::CompileStats> = None;
    for _ in 0..5 {
        let again = Kernel::compile_with(layer, &other, &options).map_err(convjit::Error::from)?;
        let s = again.compile_stats();
        debug_assert!(s.cache_hit);
        if hit.is_none_or(|h| s.seconds < h.seconds) {
            hit = Some(s);
        }
    }
    let hit = hit.expect("five compiles");

    let flops = 2.0 * layer.macs() as f64 * batch as f64;
    let mut results = Vec::new();
    let mut add = |variant: &str, per_call: Duration, flops: f64| {
        let us = per_call.as_secs_f64() * 1e6;
        let gflops = flops / per_call.as_secs_f64() / 1e9;
        results.push(json!({
            "variant": variant,
            "median_us": round(us, 2),
            "gflops": round(gflops, 2),
            "pct_peak_128": round(100.0 * gflops / PEAK_128_GFLOPS, 1),
        }));
        gflops
    };
    // The same code generator without fusion, and on every core: what the
    // planner's fusion and threads are worth.
    let fused = kernel.plan().groups.iter().any(|g| g.last > g.first);
    let cores = convjit::Host::detect().cores;
    let mut other_options = Vec::new();
    if kernel.layer() != layer {
        // What separating the rank-1 stages is worth.
        let o = convjit::Options {
            separate: convjit::Separation::Off,
            ..options.clone()
        };
        other_options.push(("jit-unseparated".to_string(), o));
    }
    if fused {
        let o = convjit::Options {
            fuse: convjit::Fusion::Never,
            ..options.clone()
        };
        other_options.push(("jit-unfused".to_string(), o));
    }
    if options.threads == 1 && cores > 1 {
        let o = convjit::Options {
            threads: cores,
            ..options.clone()
        };
        other_options.push((format!("jit-{cores}threads"), o));
    }
    // Every other code generator the host runs, with the same planner
    // overrides: what the choice of generator is worth.
    let chosen = options.backend.resolve().ok();
    for b in convjit::Backend::available() {
        if Some(b) != chosen {
            let o = convjit::Options {
                backend: b,
                ..options.clone()
            };
            other_options.push((format!("jit-{}", b.name()), o));
        }
    }
    let mut others = Vec::new();
    for (name, o) in other_options {
        let k = Kernel::compile_with(layer, &weights, &o).map_err(convjit::Error::from)?;
        others.push((name, k, Aligned::zeros(output.len())));
    }
    if let Ok((s, cost)) = &weighed {
        if !cost.runs_separated() {
            // Where the cost model keeps the layer whole: what separating
            // it anyway gives (its rewrite compiled as a layer of its own).
            let o = convjit::Options {
                separate: convjit::Separation::Off,
                ..options.clone()
            };
            let k = Kernel::compile_with(&s.layer, &s.weights, &o).map_err(convjit::Error::from)?;
            others.push(("jit-separated".into(), k, Aligned::zeros(output.len())));
        }
    }
    let mut notes = Vec::new();
    let mut baselines = Vec::new();
    if !a.no_baselines {
        for family in Family::ALL {
            if !family.available() {
                notes.push(format!(
                    "{}: not run, this CPU lacks what it needs ({})",
                    family.name(),
                    family.needs()
                ));
            } else if let Some(b) = Baseline::prepare(family, layer, &weights) {
                baselines.push((b, Aligned::zeros(output.len())));
            }
        }
    }
    // The machine's FMA throughput at each vector width it has, in the same
    // rounds: what the kernels' numbers are a fraction of at this moment.
    let mut peaks = FmaPeak::available();
    let peak_flops: Vec<(&'static str, u32, f64)> = peaks
        .iter()
        .map(|p| (p.name(), p.bits(), p.flops()))
        .collect();
    for bits in FmaPeak::WIDTHS {
        if !peak_flops.iter().any(|&(_, b, _)| b == bits) {
            notes.push(format!(
                "fma{bits}-peak: not measured, this CPU lacks {bits}-bit FMA"
            ));
        }
    }
    let mut memcpy_gbs = None;
    let mut copy_io_us = None;
    // The memory roof: a large copy in the same rounds (only for --plot).
    let mut copy = a
        .plot
        .is_some()
        .then(|| (vec![1u8; MEMCPY_MIB << 20], vec![0u8; MEMCPY_MIB << 20]));
    {
        let timed = std::cell::RefCell::new(&mut output);
        let timed = &timed;
        let mut variants: Vec<Timed> = Vec::new();
        // Every variant writes the same output while timed, as the peers'
        // back-to-back calls do: with an output each, on images (tens of
        // MB) the variants evicted each other's from L3 (1920x1080x3
        // Gaussian 5x5, three kernels alike in turn: 7.3 ms a call with
        // an output each, 4.0-4.6 ms sharing one). Each output is computed
        // once afterwards for the comparison with the interpreter.
        let (kernel, input) = (&kernel, &input[..]);
        variants.push((
            "jit".into(),
            Box::new(move || {
                let mut out = timed.borrow_mut();
                kernel
                    .run(input, &mut out[..], batch)
                    .expect("lengths checked")
            }),
        ));
        for (name, k, _) in &others {
            let run = move || {
                let mut out = timed.borrow_mut();
                k.run(input, &mut out[..], batch).expect("lengths checked")
            };
            variants.push((name.clone(), Box::new(run)));
        }
        for (b, _) in &mut baselines {
            let name = b.name().to_string();
            variants.push((
                name,
                Box::new(move || b.run(input, &mut timed.borrow_mut()[..], batch)),
            ));
        }
        // The FMA loops in a pass of their own after the kernels': timed
        // between them, the 512-bit loop slowed the variant timed after
        // it, "jit", through its untimed call (Sapphire Rapids, Gaussian
        // 5x5 on 1920x1080x3: 7.2-7.3 ms, 4.6-5.0 ms without the loops,
        // while jit-avx2, the same code, ran 5.1-5.7 ms either way).
        let mut loops: Vec<Timed> = Vec::new();
        for p in &mut peaks {
            loops.push((p.name().into(), Box::new(move || p.run())));
        }
        // The memory roof at this layer's own sizes: its input copied to
        // its output, from and to the buffers the kernels use (where both
        // are the same size, e.g. a depthwise or a residual 1x1 stage).
        if input.len() == timed.borrow().len() {
            variants.push((
                COPY_IO.into(),
                Box::new(move || timed.borrow_mut().copy_from_slice(input)),
            ));
        }
        if let Some((src, dst)) = &mut copy {
            variants.push((
                "memcpy".into(),
                Box::new(move || {
                    dst.copy_from_slice(src);
                    std::hint::black_box(&mut *dst);
                }),
            ));
        }
        let rounds = a.rounds as u32;
        let mut one_round = || {
            let mut times = interleaved_medians(budget / rounds, &mut variants);
            // (None on a CPU without FMA.)
            if !loops.is_empty() {
                times.extend(interleaved_medians(budget / rounds, &mut loops));
            }
            times
        };
        let mut times = one_round();
        for _ in 1..rounds {
            for (t, u) in times.iter_mut().zip(one_round()) {
                *t = (*t).min(u);
            }
        }
        let names: Vec<String> = variants
            .iter()
            .chain(&loops)
            .map(|(n, _)| n.clone())
            .collect();
        for (name, t) in names.iter().zip(times) {
            if name == COPY_IO {
                copy_io_us = Some(round(t.as_secs_f64() * 1e6, 2));
                continue;
            }
            if name == "memcpy" {
                // Read and written: twice the size per copy.
                memcpy_gbs = Some(round(
                    2.0 * (MEMCPY_MIB << 20) as f64 / t.as_secs_f64() / 1e9,
                    2,
                ));
                continue;
            }
            let f = peak_flops
                .iter()
                .find(|(n, _, _)| n == name)
                .map_or(flops, |&(_, _, f)| f);
            add(name, t, f);
        }
    }

    let mut max_diff = None;
    if !a.no_interp {
        // The outputs compared below, each variant's own (the timed runs
        // shared one buffer).
        kernel
            .run(&input, &mut output, batch)
            .expect("lengths checked");
        for (_, k, out) in &mut others {
            k.run(&input, out, batch).expect("lengths checked");
        }
        for (b, out) in &mut baselines {
            b.run(&input, out, batch);
        }
        let mut reference = Vec::new();
        let t = median_per_call(budget, || {
            reference = convjit::interpret(layer, &weights, &input[..], batch).expect("checked");
        });
        add("interp", t, flops);
        let diff = |out: &[f32]| {
            out.iter()
                .zip(&reference)
                .map(|(x, y)| (x - y).abs())
                .fold(0f32, f32::max)
        };
        max_diff = Some(diff(&output[..]));
        // Every variant that computed the layer, against the interpreter.
        let outputs = std::iter::once(("jit", &output))
            .chain(others.iter().map(|(n, _, o)| (n.as_str(), o)))
            .chain(baselines.iter().map(|(b, o)| (b.name(), o)));
        for (name, out) in outputs {
            if let Some(r) = results.iter_mut().find(|r| r["variant"] == name) {
                r["max_abs_diff_vs_interp"] = json!(diff(out));
            }
        }
    }
    let measured = |bits: u32| {
        results
            .iter()
            .find(|r| r["variant"] == format!("fma{bits}-peak"))
            .and_then(|r| r["gflops"].as_f64())
    };
    let measured_peak = measured(128);
    let widest = FmaPeak::WIDTHS
        .into_iter()
        .rev()
        .find_map(|bits| Some((bits, measured(bits)?)));
    let measured_peaks = FmaPeak::WIDTHS.map(measured);
    for r in &mut results {
        let g = r["gflops"].as_f64().unwrap_or(0.0);
        if let Some(peak) = measured_peak {
            r["pct_measured_peak_128"] = json!(round(100.0 * g / peak, 1));
        }
        if let Some((_, peak)) = widest {
            r["pct_widest_measured_peak"] = json!(round(100.0 * g / peak, 1));
        }
    }
    Ok(json!({
        "layer": layer.name,
        "macs": layer.macs() * batch as u64,
        "batch": batch,
        // Input, weights and output, each moved once: the roofline's bytes.
        "min_traffic_bytes": min_traffic_bytes(layer, batch),
        "memcpy_gbs": memcpy_gbs,
        // The input copied to the output, timed with the variants: what a
        // memory-bound kernel of this layer can at best approach (a plain
        // vector load/store loop may be slower than memcpy:
        // `crates/jit/examples/copy_roof.rs` times both).
        "copy_io_us": copy_io_us,
        "rounds": a.rounds,
        "compile_ms": round(stats.seconds * 1e3, 3),
        // What the planner saw (cache sizes choose the band heights).
        "host": {
            "l1d_bytes": kernel.plan().host.l1d_bytes,
            "l2_bytes": kernel.plan().host.l2_bytes,
            "cores": kernel.plan().host.cores,
            "lanes": kernel.plan().host.lanes,
        },
        "groups": kernel.plan().groups.iter().map(|g| json!({
            "stages": kernel.layer().stages[g.first..=g.last].iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
            "band_rows": g.band_rows,
            "threads": g.threads,
            "split": super::plan::split_name(g.split),
        })).collect::<Vec<_>>(),
        "compile_cache_hit_us": round(hit.seconds * 1e6, 2),
        "pack_weights_us": round(hit.pack_seconds * 1e6, 2),
        "peak_128_gflops": PEAK_128_GFLOPS,
        "measured_peak_128_gflops": measured_peak,
        "measured_peak_256_gflops": measured_peaks[1],
        "measured_peak_512_gflops": measured_peaks[2],
        "widest_measured_peak_bits": widest.map(|(bits, _)| bits),
        "backend": chosen.map(convjit::Backend::name),
        "backends_available": convjit::Backend::available().iter().map(|b| b.name()).collect::<Vec<_>>(),
        "notes": notes,
        "separation": separation.iter().map(|n| json!({
            "stage": n.stage,
            "separated": n.separated,
            "why": n.text,
        })).collect::<Vec<_>>(),
        "separation_cost": separation_cost.map(|c| json!({
            "whole_cycles": c.whole.round(),
            "separated_cycles": c.separated.round(),
            "separated": c.runs_separated(),
            "asked": c.asked,
        })),
        "max_abs_diff_jit_vs_interp": max_diff,
        "results": results,
    }))
}

/// Bytes a layer must move at least: its input and output (per image) and
/// its weights and biases (once), as f32.
fn min_traffic_bytes(layer: &Layer, batch: usize) -> u64 {
    let weights: usize = layer
        .stages
        .iter()
        .map(|s| s.weight_len() + if s.bias_key.is_some() { s.output.c } else { 0 })
        .sum();
    4 * ((layer.input.len() + layer.output().len()) * batch + weights) as u64
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// Median time of one call of `f` (for the slow interpreter). Calls are
/// grouped into samples of at least 1 ms until `budget` is spent, with at
/// least 3 samples after one warm-up call.
fn median_per_call(budget: Duration, mut f: impl FnMut()) -> Duration {
    let t = Instant::now();
    f();
    let once = t.elapsed().max(Duration::from_nanos(1));
    let reps = (Duration::from_millis(1).as_nanos() / once.as_nanos()).clamp(1, 100_000) as u32;
    let start = Instant::now();
    let mut samples = Vec::new();
    while samples.len() < 3 || (start.elapsed() < budget && samples.len() < 1000) {
        let t = Instant::now();
        for _ in 0..reps {
            f();
        }
        samples.push(t.elapsed() / reps);
    }
    samples.sort();
    samples[samples.len() / 2]
}

/// A named thing to time.
type Timed<'a> = (String, Box<dyn FnMut() + 'a>);

/// Median time of one call of each variant, sampled in interleaved rounds
/// (one sample of each per round) so that load on this shared machine
/// falls on all of them alike and their ratios hold. Each gets about
/// `budget`; samples group calls into at least 10 ms (closer to the
/// steady state of back-to-back calls), after a warm-up call.
fn interleaved_medians(budget: Duration, variants: &mut [Timed<'_>]) -> Vec<Duration> {
    let reps: Vec<u32> = variants
        .iter_mut()
        .map(|(_, f)| {
            let t = Instant::now();
            f();
            let once = t.elapsed().max(Duration::from_nanos(1));
            (Duration::from_millis(10).as_nanos() / once.as_nanos()).clamp(1, 100_000) as u32
        })
        .collect();
    let mut samples = vec![Vec::new(); variants.len()];
    let start = Instant::now();
    let total = budget * variants.len() as u32;
    while samples[0].len() < 5 || (start.elapsed() < total && samples[0].len() < 1000) {
        for ((_, f), (s, &r)) in variants.iter_mut().zip(samples.iter_mut().zip(&reps)) {
            // One untimed call first: the variant before this one evicted
            // this one's data from the caches, and back-to-back calls (how
            // the peers are timed) find it there.
            f();
            let t = Instant::now();
            for _ in 0..r {
                f();
            }
            s.push(t.elapsed() / r);
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort();
            s[s.len() / 2]
        })
        .collect()
}

/// The variant that stands in for `jit-unfused` on a layer the planner
/// did not fuse: there the planned kernel already runs stage by stage.
const UNFUSED_FALLBACK: (&str, &str) = ("jit-unfused", "jit");

/// The sum over `reports` (one per layer): for each variant that ran on
/// every layer (FMA loops left out), the sum of its medians and the
/// GFLOP/s of all the layers' MACs in that time. `jit-unfused`, timed only
/// on layers that fuse, counts `jit` on the others (the same kernel).
fn total(reports: &[serde_json::Value]) -> serde_json::Value {
    let results = |r: &serde_json::Value| r["results"].as_array().cloned().unwrap_or_default();
    let median = |r: &serde_json::Value, name: &str| {
        results(r)
            .iter()
            .find(|v| v["variant"] == name)
            .and_then(|v| v["median_us"].as_f64())
    };
    let mut names: Vec<String> = Vec::new();
    for r in reports {
        for v in results(r) {
            let name = v["variant"].as_str().unwrap_or("").to_string();
            if !name.is_empty() && !name.ends_with("-peak") && !names.contains(&name) {
                names.push(name);
            }
        }
    }
    let macs: u64 = reports.iter().filter_map(|r| r["macs"].as_u64()).sum();
    let mut sums = Vec::new();
    for name in names {
        let mut us = 0.0;
        let mut stand_ins = Vec::new();
        let mut complete = true;
        for r in reports {
            if let Some(t) = median(r, &name) {
                us += t;
            } else if let Some(t) = (name == UNFUSED_FALLBACK.0)
                .then(|| median(r, UNFUSED_FALLBACK.1))
                .flatten()
            {
                us += t;
                stand_ins.push(r["layer"].clone());
            } else {
                complete = false;
                break;
            }
        }
        if !complete || us <= 0.0 {
            continue;
        }
        let mut v = json!({
            "variant": name,
            "median_us": round(us, 2),
            "gflops": round(2.0 * macs as f64 / us / 1e3, 2),
        });
        if !stand_ins.is_empty() {
            v["jit_on_layers"] = json!(stand_ins);
        }
        sums.push(v);
    }
    json!({
        "total": true,
        "layers": reports.iter().map(|r| r["layer"].clone()).collect::<Vec<_>>(),
        "macs": macs,
        "batch": reports[0]["batch"],
        "rounds": reports[0]["rounds"],
        "backend": reports[0]["backend"],
        "what": "per variant that ran on every layer, the sum of its per-layer medians",
        "results": sums,
    })
}

/// A network's layers (each takes the previous one's output) timed as a
/// network runs them: one after another, each on the previous one's
/// output, the planned kernel and (with one thread planned, on a host of
/// several cores) the same on every core, in interleaved rounds. Timed
/// alone, back to back, a layer finds its weights and buffers in the
/// caches; here the other layers have evicted them, as when the peers time
/// a whole network. The layers' sum leaves that out.
fn time_chain(
    layers: &[Layer],
    options: &convjit::Options,
    a: &BenchArgs,
) -> Result<Vec<serde_json::Value>, Failure> {
    let batch = a.batch as usize;
    let cores = convjit::Host::detect().cores;
    let mut configs = vec![("jit".to_string(), options.clone())];
    if options.threads == 1 && cores > 1 {
        let o = convjit::Options {
            threads: cores,
            ..options.clone()
        };
        configs.push((format!("jit-{cores}threads"), o));
    }
    let mut chains = Vec::new();
    for (name, o) in configs {
        // The weights bench_layer timed (same seed); the code is a cache hit.
        let kernels = layers
            .iter()
            .map(|l| Kernel::compile_with(l, &Weights::random(l, 1), &o))
            .collect::<Result<Vec<_>, _>>()
            .map_err(convjit::Error::from)?;
        let input = Rng::new(2).vec(layers[0].input.len() * batch, 1.0);
        let mut tensors = vec![Aligned::from(&input)];
        tensors.extend(
            layers
                .iter()
                .map(|l| Aligned::zeros(l.output().len() * batch)),
        );
        chains.push((name, kernels, tensors));
    }
    let mut variants: Vec<Timed> = Vec::new();
    for (name, kernels, tensors) in &mut chains {
        let run = move || {
            for (i, k) in kernels.iter().enumerate() {
                let (done, rest) = tensors.split_at_mut(i + 1);
                k.run(&done[i], &mut rest[0], batch)
                    .expect("lengths checked");
            }
        };
        variants.push((name.clone(), Box::new(run)));
    }
    let budget = Duration::from_secs_f64(a.seconds);
    let rounds = a.rounds as u32;
    let mut times = interleaved_medians(budget / rounds, &mut variants);
    for _ in 1..rounds {
        let again = interleaved_medians(budget / rounds, &mut variants);
        for (t, u) in times.iter_mut().zip(again) {
            *t = (*t).min(u);
        }
    }
    let flops = 2.0 * batch as f64 * layers.iter().map(Layer::macs).sum::<u64>() as f64;
    Ok(variants
        .iter()
        .zip(times)
        .map(|((name, _), t)| {
            json!({
                "variant": name,
                "median_us": round(t.as_secs_f64() * 1e6, 2),
                "gflops": round(flops / t.as_secs_f64() / 1e9, 2),
            })
        })
        .collect())
}

fn total_text(t: &serde_json::Value) -> String {
    let layers = t["layers"].as_array().map_or(0, Vec::len);
    let mut out = format!(
        "total over {layers} layers: {} MACs (batch {}), each variant's per-layer medians summed\n",
        thousands(t["macs"].as_u64().unwrap_or(0)),
        t["batch"],
    );
    out += &format!("  {:<16} {:>12} {:>9}\n", "variant", "sum us", "GFLOP/s");
    for v in t["results"].as_array().into_iter().flatten() {
        out += &format!(
            "  {:<16} {:>12.2} {:>9.2}",
            v["variant"].as_str().unwrap_or(""),
            v["median_us"].as_f64().unwrap_or(0.0),
            v["gflops"].as_f64().unwrap_or(0.0),
        );
        if let Some(l) = v["jit_on_layers"].as_array() {
            out += &format!("  (jit's time on the {} layers not fused)", l.len());
        }
        out += "\n";
    }
    if let Some(chained) = t["chained"].as_array() {
        out += "  chained: the layers one after another, each on the previous one's output\n";
        for v in chained {
            out += &format!(
                "  {:<16} {:>12.2} {:>9.2}\n",
                v["variant"].as_str().unwrap_or(""),
                v["median_us"].as_f64().unwrap_or(0.0),
                v["gflops"].as_f64().unwrap_or(0.0),
            );
        }
    }
    out
}

fn text(r: &serde_json::Value) -> String {
    let mut out = format!(
        "layer {}: {} MACs (batch {}), compile {} ms, cache hit {} us (+ {} us packing weights)\n",
        r["layer"].as_str().unwrap_or(""),
        thousands(r["macs"].as_u64().unwrap_or(0)),
        r["batch"],
        r["compile_ms"],
        r["compile_cache_hit_us"],
        r["pack_weights_us"],
    );
    let widest = r["widest_measured_peak_bits"]
        .as_u64()
        .map_or("-".into(), |b| format!("% meas. {b}-bit"));
    out += &format!(
        "  {:<16} {:>12} {:>9} {:>16} {:>16} {:>16}\n",
        "variant", "median us", "GFLOP/s", "% 128-bit peak", "% meas. 128-bit", widest
    );
    let pct = |v: &serde_json::Value| v.as_f64().map_or("-".into(), |p| format!("{p:.1}%"));
    for v in r["results"].as_array().into_iter().flatten() {
        out += &format!(
            "  {:<16} {:>12.2} {:>9.2} {:>15.1}% {:>16} {:>16}\n",
            v["variant"].as_str().unwrap_or(""),
            v["median_us"].as_f64().unwrap_or(0.0),
            v["gflops"].as_f64().unwrap_or(0.0),
            v["pct_peak_128"].as_f64().unwrap_or(0.0),
            pct(&v["pct_measured_peak_128"]),
            pct(&v["pct_widest_measured_peak"]),
        );
    }
    if let Some(c) = r["copy_io_us"].as_f64() {
        let jit = r["results"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|v| v["variant"] == "jit")
            .and_then(|v| v["median_us"].as_f64());
        out += &format!("  copy of the input to the output: {c:.2} us");
        if let Some(j) = jit {
            out += &format!(" (jit takes {:.2}x as long)", j / c);
        }
        out += "\n";
    }
    if let Some(d) = r["max_abs_diff_jit_vs_interp"].as_f64() {
        out += &format!("  max |jit - interp| = {d:.3e}\n");
    }
    for n in r["separation"].as_array().into_iter().flatten() {
        out += &format!(
            "  {}: {}\n",
            n["stage"].as_str().unwrap_or(""),
            n["why"].as_str().unwrap_or("")
        );
    }
    if let Some(c) = r["separation_cost"].as_object() {
        let get = |key: &str| c.get(key).and_then(|v| v.as_f64()).unwrap_or(0.0);
        let cost = convjit::SeparationCost {
            whole: get("whole_cycles"),
            separated: get("separated_cycles"),
            asked: c.get("asked").and_then(|v| v.as_bool()).unwrap_or(false),
        };
        let runs = match cost.runs_separated() {
            true => cost.decision(),
            false => "whole (jit-separated: separated anyway)",
        };
        out += &format!("  separation: {cost}: runs {runs}\n");
    }
    if let Some(b) = r["backend"].as_str() {
        out += &format!("  jit's code generator: {b}\n");
    }
    for n in r["notes"].as_array().into_iter().flatten() {
        out += &format!("  note: {}\n", n.as_str().unwrap_or(""));
    }
    out
}

/// f32s starting at a 64-byte boundary, as the peers' tensors do (TFLite's
/// and ONNX Runtime's arenas align to 64 bytes): with a `Vec<f32>`'s 16,
/// every 512-bit access would straddle two cache lines, for every variant.
struct Aligned {
    buf: Vec<f32>,
    start: usize,
    len: usize,
}

impl Aligned {
    fn zeros(len: usize) -> Aligned {
        let buf = vec![0f32; len + 16];
        let start = buf.as_ptr().align_offset(64).min(15);
        Aligned { buf, start, len }
    }

    fn from(v: &[f32]) -> Aligned {
        let mut a = Aligned::zeros(v.len());
        a.copy_from_slice(v);
        a
    }
}

impl std::ops::Deref for Aligned {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.start..self.start + self.len]
    }
}

impl std::ops::DerefMut for Aligned {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.start..self.start + self.len]
    }
}
