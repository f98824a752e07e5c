//! One layer's benchmark (`convjit bench`, per layer): the planned kernel,
//! its variants (unfused, on every core, every other code generator,
//! separated or not), the hand-written baselines, the interpreter and the
//! FMA loops, timed in interleaved rounds; the report is one JSON object.

use crate::harness::{best_of_rounds, interleaved_medians, median_per_call, Aligned, Timed};
use crate::{round, Settings, MEMCPY_MIB, PEAK_128_GFLOPS};
use convjit::{Error, Kernel, Layer, Options, SeparationCost, SeparationNote, Weights, Winograd};
use convjit_baselines::{Baseline, Family, FmaPeak};
use serde_json::{json, Value};
use std::cell::RefCell;
use std::time::Duration;

/// The variant that copies the layer's input to its output.
const COPY_IO: &str = "copy-io";

/// A kernel variant timed beside the planned one, with its own output
/// (for the comparison with the interpreter).
type Variant = (String, Kernel, Aligned);

/// The most multiply-accumulates (times the batch) of a layer whose
/// interpreter and hand-written baselines `bench` times: each is called
/// a few times a round, at about a second per 10^9.
const MAX_SLOW_VARIANT_MACS: u64 = 1 << 31;

/// Times `layer` (with `given` weights, else seeded random ones) as
/// `settings` says, the planned kernel compiled with `options`; returns
/// the report (see `convjit bench --json`).
pub fn bench_layer(
    layer: &Layer,
    given: Option<Weights>,
    options: &Options,
    settings: &Settings,
) -> Result<Value, Error> {
    let batch = settings.batch;
    // The input, the shared output, the reference and a baseline's output.
    convjit::check_batch(layer, batch, 4)?;
    if given.is_none() {
        // Before gigabytes of random weights for a kernel too wide to compile.
        Kernel::check_size(layer, options, None)?;
    }
    let weights = match &given {
        Some(w) => w.clone(),
        None => Weights::try_random(layer, 1)?,
    };
    let input = Aligned::random(layer.input.len() * batch, 2)?;
    let mut output = Aligned::zeros(layer.output().len() * batch)?;

    let kernel = Kernel::compile_with(layer, &weights, options)?;
    // What separating the rank-1 stages would give, and whether the cost
    // model takes it (the planned kernel then runs the rewritten layer).
    let weighed = convjit::separation(layer, &weights, options);
    let stats = kernel.compile_stats();
    // (Given weights again: others might not separate as these do.)
    let other = match given {
        Some(w) => w,
        None => Weights::try_random(layer, 3)?,
    };
    let hit = cache_hit(layer, &other, options)?;

    let mut others = variants(layer, &weights, options, &kernel, output.len())?;
    if let Ok((s, cost)) = &weighed {
        if !cost.runs_separated() {
            others.push(separated_anyway(s, options, output.len())?);
        }
    }
    let mut notes = Vec::new();
    let mut baselines = Vec::new();
    // The naive baseline and the interpreter take seconds a call on a
    // layer this large, and each is called at least a few times: minutes,
    // or hours (2^33 MACs: 16 s a call). Left out, and said.
    let work = layer.macs().saturating_mul(batch as u64);
    let slow = work > MAX_SLOW_VARIANT_MACS;
    if settings.baselines && slow {
        notes.push(format!(
            "baselines: not measured, {work} multiply-accumulates (more than {MAX_SLOW_VARIANT_MACS}) \
             would take minutes a round"
        ));
    } else if settings.baselines {
        baselines = prepare_baselines(layer, &weights, output.len(), &mut notes)?;
    }
    // Each kernel once with its error surfaced (it makes its run buffers:
    // where memory is short that is an error, not a panic in the timing).
    kernel.run(&input, &mut output, batch)?;
    for (_, k, out) in others.iter_mut() {
        k.run(&input, out, batch)?;
    }
    let mut peaks = Peaks {
        fma: fma_peaks(&mut notes),
        bf16: bf16_peaks(&mut notes),
    };
    let flops = 2.0 * layer.macs() as f64 * batch as f64;
    let mut results = Results::default();
    let roofs = Timing {
        kernel: &kernel,
        others: &others,
        input: &input,
        batch,
    }
    .measure(
        &mut output,
        &mut baselines,
        &mut peaks,
        settings,
        flops,
        &mut results,
    );

    let mut max_diff = None;
    // The interpreter once in f32 (timed: more in its budget, at least
    // once), once more in bf16; where that is hours of work it is left out.
    let passes = 1 + u64::from(options.precision == convjit::Precision::Bf16);
    let interpreter = match convjit::check_work(layer, batch, passes) {
        Ok(()) if slow && settings.interpreter => {
            notes.push(format!(
                "interp: not measured, {work} multiply-accumulates (more than \
                 {MAX_SLOW_VARIANT_MACS}) would take minutes a round; verify checks it"
            ));
            false
        }
        Ok(()) => settings.interpreter,
        Err(e) if settings.interpreter => {
            notes.push(format!("interp: not measured, {e}"));
            false
        }
        Err(_) => false,
    };
    if interpreter {
        max_diff = Some(against_interpreter(
            layer,
            &weights,
            &input,
            batch,
            (&kernel, &mut output),
            &mut others,
            &mut baselines,
            settings,
            flops,
            &mut results,
        )?);
    }
    let Results(mut results) = results;
    let peaks = MeasuredPeaks::add_percentages(&mut results);
    let (separation, separation_cost) = match &weighed {
        Ok((s, cost)) => (&s.notes, Some(*cost)),
        Err(notes) => (notes, None),
    };
    Ok(Report {
        layer,
        settings,
        kernel: &kernel,
        options,
        compile_seconds: stats.seconds,
        hit,
        roofs,
        peaks,
        notes,
        separation,
        separation_cost,
        max_diff,
        results,
    }
    .json())
}

/// Where the cost model keeps the layer whole: what separating it anyway
/// gives (`separated`, its rewrite, compiled as a layer of its own).
fn separated_anyway(
    separated: &convjit::Separated,
    options: &Options,
    len: usize,
) -> Result<Variant, Error> {
    let o = Options {
        separate: convjit::Separation::Off,
        ..options.clone()
    };
    let k = Kernel::compile_with(&separated.layer, &separated.weights, &o)?;
    Ok(("jit-separated".into(), k, Aligned::zeros(len)?))
}

/// The machine's FMA loops at each vector width it has, timed in the same
/// rounds: what the kernels' numbers are a fraction of at this moment; a
/// note for each width it lacks.
fn fma_peaks(notes: &mut Vec<String>) -> Vec<FmaPeak> {
    let peaks = FmaPeak::available();
    for bits in FmaPeak::WIDTHS {
        if !peaks.iter().any(|p| p.bits() == bits) {
            notes.push(format!(
                "fma{bits}-peak: not measured, this CPU lacks {bits}-bit FMA"
            ));
        }
    }
    peaks
}

/// The machine's bf16 loops (`amx-bf16-peak`, `bf16-512-peak`) where it
/// runs them; a note for each it does not.
fn bf16_peaks(notes: &mut Vec<String>) -> Vec<convjit::PeakLoop> {
    let loops = convjit::bf16_peaks().unwrap_or_default();
    for (name, why) in [
        ("amx-bf16-peak", convjit::tiles_refused()),
        ("bf16-512-peak", Some("this CPU lacks AVX512_BF16")),
    ] {
        if !loops.iter().any(|l| l.name() == name) {
            let why = why.unwrap_or("not installed");
            notes.push(format!("{name}: not measured, {why}"));
        }
    }
    loops
}

/// The ceilings timed beside the kernels: FMA loops at each width, and
/// the bf16 loops.
struct Peaks {
    fma: Vec<FmaPeak>,
    bf16: Vec<convjit::PeakLoop>,
}

/// Iterations of a bf16 peak loop per timed call: about as long as an FMA
/// loop's call (a tile product takes 16 cycles, four to an iteration;
/// `vdpbf16ps` two a cycle, twelve to an iteration).
fn bf16_iterations(name: &str) -> usize {
    match name {
        "amx-bf16-peak" => 2_000,
        _ => 20_000,
    }
}

/// The FMA loops' GFLOP/s as measured in this run.
struct MeasuredPeaks {
    /// At 128, 256 and 512 bits (`None`: not measured).
    gflops: [Option<f64>; 3],
    /// The widest measured: (bits, GFLOP/s).
    widest: Option<(u32, f64)>,
    /// `amx-bf16-peak` and `bf16-512-peak`, where measured.
    amx: Option<f64>,
    bf16_512: Option<f64>,
}

impl MeasuredPeaks {
    /// Reads the peaks from `results` and adds to each result its
    /// percentage of the 128-bit and of the widest measured peak.
    fn add_percentages(results: &mut [Value]) -> MeasuredPeaks {
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
        let gflops = FmaPeak::WIDTHS.map(measured);
        let named = |name: &str| {
            results
                .iter()
                .find(|r| r["variant"] == name)
                .and_then(|r| r["gflops"].as_f64())
        };
        let (amx, bf16_512) = (named("amx-bf16-peak"), named("bf16-512-peak"));
        // Against the peaks measured in this run's rounds. Each is one
        // core's loop: a variant on N threads may reach N x 100%, and one
        // with wider vectors than 128 bits goes past 100% of the 128-bit
        // peak.
        for r in results.iter_mut() {
            let g = r["gflops"].as_f64().unwrap_or(0.0);
            if let Some(peak) = amx {
                r["pct_amx_bf16_peak"] = json!(round(100.0 * g / peak, 1));
            }
            if let Some(peak) = bf16_512 {
                r["pct_bf16_512_peak"] = json!(round(100.0 * g / peak, 1));
            }
            if let Some(peak) = measured_peak {
                r["pct_measured_peak_128"] = json!(round(100.0 * g / peak, 1));
            }
            if let Some((_, peak)) = widest {
                r["pct_widest_measured_peak"] = json!(round(100.0 * g / peak, 1));
            }
        }
        MeasuredPeaks {
            gflops,
            widest,
            amx,
            bf16_512,
        }
    }
}

/// What one layer's report says, gathered by [`bench_layer`].
struct Report<'a> {
    layer: &'a Layer,
    settings: &'a Settings,
    kernel: &'a Kernel,
    options: &'a Options,
    compile_seconds: f64,
    hit: convjit::CompileStats,
    roofs: Roofs,
    peaks: MeasuredPeaks,
    notes: Vec<String>,
    separation: &'a [SeparationNote],
    separation_cost: Option<SeparationCost>,
    max_diff: Option<f32>,
    results: Vec<Value>,
}

impl Report<'_> {
    /// The report as `convjit bench --json` prints it.
    fn json(self) -> Value {
        let (layer, batch, kernel) = (self.layer, self.settings.batch, self.kernel);
        let chosen = self.options.backend.resolve().ok();
        let plan = kernel.layer_plan();
        json!({
            "layer": layer.name,
            "macs": layer.macs() * batch as u64,
            "batch": batch,
            // Input, weights and output, each moved once: the roofline's bytes.
            "min_traffic_bytes": min_traffic_bytes(layer, batch),
            "memcpy_gbs": self.roofs.memcpy_gbs,
            // The input copied to the output, timed with the variants: what a
            // memory-bound kernel of this layer can at best approach (a plain
            // vector load/store loop may be slower than memcpy:
            // `crates/jit/examples/copy_roof.rs` times both).
            "copy_io_us": self.roofs.copy_io_us,
            "rounds": self.settings.rounds,
            "compile_ms": round(self.compile_seconds * 1e3, 3),
            // What the planner saw (cache sizes choose the band heights).
            "host": {
                "l1d_bytes": plan.host.l1d_bytes,
                "l2_bytes": plan.host.l2_bytes,
                "cores": plan.host.cores,
                "lanes": plan.host.lanes,
            },
            "groups": plan.groups.iter().map(|g| json!({
                "stages": convjit::plan_json::group_names(kernel.layer(), g),
                "band_rows": g.band_rows,
                "threads": g.threads,
                "split": convjit::plan_json::split_name(g.split),
            })).collect::<Vec<_>>(),
            "compile_cache_hit_us": round(self.hit.seconds * 1e6, 2),
            "pack_weights_us": round(self.hit.pack_seconds * 1e6, 2),
            "peak_128_gflops": PEAK_128_GFLOPS,
            "measured_peak_128_gflops": self.peaks.gflops[0],
            "measured_peak_256_gflops": self.peaks.gflops[1],
            "measured_peak_512_gflops": self.peaks.gflops[2],
            "widest_measured_peak_bits": self.peaks.widest.map(|(bits, _)| bits),
            "measured_peak_amx_bf16_gflops": self.peaks.amx,
            "measured_peak_bf16_512_gflops": self.peaks.bf16_512,
            "backend": chosen.map(convjit::Backend::name),
            "backends_available": convjit::Backend::available().iter().map(|b| b.name()).collect::<Vec<_>>(),
            "notes": self.notes,
            "separation": separation_json(self.separation),
            "separation_cost": self.separation_cost.map(cost_json),
            "max_abs_diff_jit_vs_interp": self.max_diff,
            "results": self.results,
        })
    }
}

fn separation_json(notes: &[SeparationNote]) -> Vec<Value> {
    notes
        .iter()
        .map(|n| {
            json!({
                "stage": n.stage,
                "separated": n.separated,
                "why": n.text,
            })
        })
        .collect()
}

fn cost_json(c: SeparationCost) -> Value {
    json!({
        "whole_cycles": c.whole.round(),
        "separated_cycles": c.separated.round(),
        "separated": c.runs_separated(),
        "asked": c.asked,
    })
}

/// The same layer compiled again (other weights, same code): a cache hit,
/// which looks the code up and packs the new weights. The fastest of
/// five: a single lookup is a microsecond, as long as one cache miss or
/// page fault.
fn cache_hit(
    layer: &Layer,
    weights: &Weights,
    options: &Options,
) -> Result<convjit::CompileStats, Error> {
    let mut hit: Option<convjit::CompileStats> = None;
    for _ in 0..5 {
        let again = Kernel::compile_with(layer, weights, options)?;
        let s = again.compile_stats();
        debug_assert!(s.cache_hit);
        if hit.is_none_or(|h| s.seconds < h.seconds) {
            hit = Some(s);
        }
    }
    Ok(hit.expect("five compiles"))
}

/// Beside the planned kernel, the same on a different number of threads:
/// on one (`jit-1thread`, for single-thread comparisons) where it may use
/// several, else (`--threads 1`) on every core (`jit-{cores}threads`).
pub fn thread_variant(options: &Options, cores: usize) -> Option<(String, Options)> {
    let (name, threads) = match options.threads {
        _ if cores < 2 => return None,
        1 => (format!("jit-{cores}threads"), cores),
        _ => ("jit-1thread".to_string(), 1),
    };
    let o = Options {
        threads,
        ..options.clone()
    };
    Some((name, o))
}

/// The planned kernel's variants, compiled: separated or not, without
/// fusion, on one thread or every core ([`thread_variant`]; what the planner's
/// choices are worth), in bf16
/// (`jit-bf16`, for an f32 plan on a host with AVX512_BF16), and every
/// other code generator the host runs that computes the planned precision,
/// with the same planner overrides (what the choice of generator is
/// worth). Each has an output
/// of `len` floats.
fn variants(
    layer: &Layer,
    weights: &Weights,
    options: &Options,
    kernel: &Kernel,
    len: usize,
) -> Result<Vec<Variant>, Error> {
    let fused = kernel.layer_plan().groups.iter().any(|g| g.last > g.first);
    let cores = convjit::Host::detect().cores;
    let mut other_options = Vec::new();
    if kernel.layer() != layer {
        // What separating the rank-1 stages is worth.
        let o = Options {
            separate: convjit::Separation::Off,
            ..options.clone()
        };
        other_options.push(("jit-unseparated".to_string(), o));
    }
    if fused {
        let o = Options {
            fuse: convjit::Fusion::Never,
            ..options.clone()
        };
        other_options.push(("jit-unfused".to_string(), o));
    }
    if let Some((name, o)) = thread_variant(options, cores) {
        other_options.push((name, o));
    }
    // The same layer in bf16 where the host computes it (the AVX-512
    // generator, AMX tiles where granted): what the precision is worth.
    let bf16 = convjit::Precision::Bf16;
    if options.precision != bf16 && convjit::Backend::Avx512.check_precision(bf16).is_ok() {
        let o = Options {
            precision: bf16,
            backend: convjit::Backend::Avx512,
            ..options.clone()
        };
        other_options.push(("jit-bf16".to_string(), o));
    }
    // What Winograd is worth, where it would run (or, when the plan runs
    // it, the direct kernel and the other tile size).
    let f32 = convjit::Precision::F32;
    let (name, other) = match options.winograd {
        Winograd::Off => ("jit-winograd", Winograd::Auto),
        _ => ("jit-direct", Winograd::Off),
    };
    let asked = options.winograd.max(other);
    let tile = options.winograd_tile;
    let runs = convjit::winograd_stages(layer, cores, asked, tile);
    if options.precision == f32 && runs.iter().any(Result::is_ok) {
        let o = Options {
            winograd: other,
            ..options.clone()
        };
        other_options.push((name.to_string(), o));
        if other == Winograd::Off {
            let planned: Vec<usize> = runs.iter().flatten().map(|w| w.variant.tile()).collect();
            for m in [2, 4] {
                let forced = convjit::winograd_stages(layer, cores, asked, Some(m));
                let differs = forced
                    .iter()
                    .flatten()
                    .map(|w| w.variant.tile())
                    .ne(planned.iter().copied());
                if differs && forced.iter().any(Result::is_ok) {
                    let o = Options {
                        winograd_tile: Some(m),
                        ..options.clone()
                    };
                    other_options.push((format!("jit-winograd{m}"), o));
                }
            }
        }
    }
    let chosen = options.backend.resolve().ok();
    for b in convjit::Backend::available() {
        // Only the generators that compute the planned precision.
        if Some(b) != chosen && b.check_precision(options.precision).is_ok() {
            let o = Options {
                backend: b,
                ..options.clone()
            };
            other_options.push((format!("jit-{}", b.name()), o));
        }
    }
    let mut others = Vec::new();
    for (name, o) in other_options {
        let k = Kernel::compile_with(layer, weights, &o)?;
        others.push((name, k, Aligned::zeros(len)?));
    }
    Ok(others)
}

/// Every baseline family this CPU runs, prepared for `layer`, with an
/// output of `len` floats each; a note for each it cannot run.
fn prepare_baselines(
    layer: &Layer,
    weights: &Weights,
    len: usize,
    notes: &mut Vec<String>,
) -> Result<Vec<(Baseline, Aligned)>, Error> {
    let mut baselines = Vec::new();
    for family in Family::ALL {
        if !family.available() {
            notes.push(format!(
                "{}: not run, this CPU lacks what it needs ({})",
                family.name(),
                family.needs()
            ));
        } else if let Some(b) = Baseline::prepare(family, layer, weights) {
            baselines.push((b, Aligned::zeros(len)?));
        }
    }
    Ok(baselines)
}

/// The report's `results`: one object per variant.
#[derive(Default)]
struct Results(Vec<Value>);

impl Results {
    /// Adds a variant's median time per call of `flops`; its GFLOP/s.
    fn add(&mut self, variant: &str, per_call: Duration, flops: f64) -> f64 {
        let us = per_call.as_secs_f64() * 1e6;
        let gflops = flops / per_call.as_secs_f64() / 1e9;
        self.0.push(json!({
            "variant": variant,
            "median_us": round(us, 2),
            "gflops": round(gflops, 2),
            // Of the fixed nominal figure, not of this run's peak.
            "pct_peak_128": round(100.0 * gflops / PEAK_128_GFLOPS, 1),
        }));
        gflops
    }
}

/// What is timed: the planned kernel and its variants on one input.
struct Timing<'a> {
    kernel: &'a Kernel,
    others: &'a [Variant],
    input: &'a [f32],
    batch: usize,
}

/// The memory roofs measured beside the kernels.
struct Roofs {
    memcpy_gbs: Option<f64>,
    copy_io_us: Option<f64>,
}

impl Timing<'_> {
    /// Times the kernels, the baselines, a copy of the input to the output
    /// (where both are the same size) and, for the roofline
    /// (`settings.memcpy`), a large memcpy, in interleaved rounds, then the
    /// FMA loops in rounds of their own; adds each to `results`.
    fn measure(
        &self,
        output: &mut Aligned,
        baselines: &mut [(Baseline, Aligned)],
        peaks: &mut Peaks,
        settings: &Settings,
        flops: f64,
        results: &mut Results,
    ) -> Roofs {
        let (batch, input) = (self.batch, self.input);
        let mut peak_flops: Vec<(&'static str, f64)> =
            peaks.fma.iter().map(|p| (p.name(), p.flops())).collect();
        peak_flops.extend(
            (peaks.bf16.iter()).map(|p| (p.name(), p.flops(bf16_iterations(p.name())) as f64)),
        );
        // The memory roof: a large copy in the same rounds (only for --plot).
        let mut copy = settings
            .memcpy
            .then(|| (vec![1u8; MEMCPY_MIB << 20], vec![0u8; MEMCPY_MIB << 20]));
        let timed = RefCell::new(output);
        let timed = &timed;
        let mut variants: Vec<Timed> = Vec::new();
        // Every variant writes the same output while timed, as the peers'
        // back-to-back calls do: with an output each, on images (tens of
        // MB) the variants evicted each other's from L3 (1920x1080x3
        // Gaussian 5x5, three kernels alike in turn: 7.3 ms a call with
        // an output each, 4.0-4.6 ms sharing one). Each output is computed
        // once afterwards for the comparison with the interpreter.
        let kernel = self.kernel;
        variants.push((
            "jit".into(),
            Box::new(move || {
                let mut out = timed.borrow_mut();
                kernel
                    .run(input, &mut out[..], batch)
                    .expect("ran once before the timing")
            }),
        ));
        for (name, k, _) in self.others {
            let run = move || {
                let mut out = timed.borrow_mut();
                k.run(input, &mut out[..], batch)
                    .expect("ran once before the timing")
            };
            variants.push((name.clone(), Box::new(run)));
        }
        for (b, _) in baselines.iter_mut() {
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
        for p in peaks.fma.iter_mut() {
            loops.push((p.name().into(), Box::new(move || p.run())));
        }
        for p in peaks.bf16.iter_mut() {
            let n = bf16_iterations(p.name());
            loops.push((p.name().into(), Box::new(move || p.run(n))));
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
        let budget = Duration::from_secs_f64(settings.seconds);
        let rounds = settings.rounds;
        let times = best_of_rounds(rounds, || {
            let mut times = interleaved_medians(budget / rounds, &mut variants);
            // (None on a CPU without FMA.)
            if !loops.is_empty() {
                times.extend(interleaved_medians(budget / rounds, &mut loops));
            }
            times
        });
        let names = variants.iter().chain(&loops).map(|(n, _)| n.as_str());
        record_times(names.zip(times), &peak_flops, flops, results)
    }
}

/// Each variant's median per call: the memory roofs' as [`Roofs`], the
/// others' added to `results` (the FMA loops at their `peak_flops`, every
/// kernel at `flops`).
fn record_times<'n>(
    times: impl Iterator<Item = (&'n str, Duration)>,
    peak_flops: &[(&str, f64)],
    flops: f64,
    results: &mut Results,
) -> Roofs {
    let mut roofs = Roofs {
        memcpy_gbs: None,
        copy_io_us: None,
    };
    for (name, t) in times {
        if name == COPY_IO {
            roofs.copy_io_us = Some(round(t.as_secs_f64() * 1e6, 2));
            continue;
        }
        if name == "memcpy" {
            // Read and written: twice the size per copy.
            roofs.memcpy_gbs = Some(round(
                2.0 * (MEMCPY_MIB << 20) as f64 / t.as_secs_f64() / 1e9,
                2,
            ));
            continue;
        }
        let f = peak_flops
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(flops, |&(_, f)| f);
        results.add(name, t, f);
    }
    roofs
}

/// Times the interpreter and compares every variant that computed the
/// layer with it (each on its own output: the timed runs shared one);
/// returns the planned kernel's largest difference.
#[allow(clippy::too_many_arguments)]
fn against_interpreter(
    layer: &Layer,
    weights: &Weights,
    input: &[f32],
    batch: usize,
    (kernel, output): (&Kernel, &mut Aligned),
    others: &mut [Variant],
    baselines: &mut [(Baseline, Aligned)],
    settings: &Settings,
    flops: f64,
    results: &mut Results,
) -> Result<f32, Error> {
    kernel.run(input, output, batch)?;
    for (_, k, out) in others.iter_mut() {
        k.run(input, out, batch)?;
    }
    for (b, out) in baselines.iter_mut() {
        b.run(input, out, batch);
    }
    // Once with its error surfaced (memory), then timed.
    let mut reference = convjit::interpret(layer, weights, input, batch)?;
    let budget = Duration::from_secs_f64(settings.seconds);
    let mut failed = None;
    let t = median_per_call(budget, || {
        match convjit::interpret(layer, weights, input, batch) {
            Ok(r) => reference = r,
            Err(e) => failed = Some(e),
        }
    });
    if let Some(e) = failed {
        return Err(e.into());
    }
    results.add("interp", t, flops);
    // A bf16 kernel against the interpreter in bf16 (the same roundings).
    let bf16 = convjit::Precision::Bf16;
    let any_bf16 =
        kernel.precision() == bf16 || others.iter().any(|(_, k, _)| k.precision() == bf16);
    let reference_bf16 = match any_bf16 {
        true => convjit::interpret_in(layer, weights, input, batch, bf16)?,
        false => Vec::new(),
    };
    let diff = |out: &[f32], precision: convjit::Precision| {
        let want = match precision {
            convjit::Precision::Bf16 => &reference_bf16,
            convjit::Precision::F32 => &reference,
        };
        out.iter()
            .zip(want)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max)
    };
    let max_diff = diff(&output[..], kernel.precision());
    // Every variant that computed the layer, against the interpreter (in
    // its precision).
    let f32 = convjit::Precision::F32;
    let outputs = std::iter::once(("jit", &**output, kernel.precision()))
        .chain(
            others
                .iter()
                .map(|(n, k, o)| (n.as_str(), &o[..], k.precision())),
        )
        .chain(baselines.iter().map(|(b, o)| (b.name(), &o[..], f32)));
    for (name, out, precision) in outputs {
        if let Some(r) = results.0.iter_mut().find(|r| r["variant"] == name) {
            r["max_abs_diff_vs_interp"] = json!(diff(out, precision));
        }
    }
    Ok(max_diff)
}

/// Bytes a layer must move at least: its input and output (per image) and
/// its weights and biases (once), as f32.
pub fn min_traffic_bytes(layer: &Layer, batch: usize) -> u64 {
    let weights: usize = layer
        .stages
        .iter()
        .map(|s| s.weight_len() + if s.bias_key.is_some() { s.output.c } else { 0 })
        .sum();
    4 * ((layer.input.len() + layer.output().len()) * batch + weights) as u64
}
