//! `convjit bench FILE.conv [--layer NAME] [--json]`: times the generated
//! kernel against the reference interpreter and the hand-written baselines
//! (`convjit-baselines`: naive loops, 128-bit SSE/FMA, 256-bit AVX2/FMA, the
//! `gemm` crate), per layer, with seeded data, all in one run so their
//! ratios are comparable. In the same interleaved rounds: the kernel from
//! every other code generator the host runs (`jit-cranelift`, `jit-avx2`,
//! `jit-avx512`); in each round after them, FMA loops at each vector width
//! the host has (one core's ceilings at that moment). The variants
//! write one output while timed, as back-to-back calls do.
//!
//! Over more than one layer (a whole network, one layer per block), it
//! also reports the sum over the layers: per variant that ran on every
//! layer, the sum of its per-layer medians, and, where the layers chain,
//! the layers timed one after another (a "total" block after the layers'
//! tables; with `--json --total`, a last JSON line).
//!
//! The measuring is `convjit-bench`'s (`bench_layer`, `total`,
//! `time_chain`, on its timing harness); this file reads the flags and
//! prints the reports as text or JSON, and the roofline.

use super::{thousands, Failure};
use clap::Args;
use convjit_bench::{bench_layer, time_chain, total, Settings, MEMCPY_MIB};
use serde_json::json;
use std::path::{Path, PathBuf};

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
    let settings = Settings {
        batch: a.batch as usize,
        seconds: a.seconds,
        rounds: a.rounds as u32,
        interpreter: !a.no_interp,
        baselines: !a.no_baselines,
        memcpy: a.plot.is_some(),
    };
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
    // A layer that would not compile is refused before minutes of timing
    // the ones before it. (Given weights may separate it into one that
    // does: bench_layer decides then.)
    if a.weights.is_none() {
        for layer in &layers {
            convjit::Kernel::check_size(layer, &options, None).map_err(convjit::Error::from)?;
        }
    }
    let bar = super::progress::bar(layers.len() as u64, "bench");
    for layer in &layers {
        bar.set_message(layer.name.clone());
        let weights = match &a.weights {
            Some(path) => Some(convjit::load_weights(layer, path)?),
            None => None,
        };
        let report = bench_layer(layer, weights, &options, &settings)?;
        // Printed with the bar out of the way (it is on stderr, the report on stdout).
        bar.suspend(|| {
            if a.json {
                println!("{report}");
            } else {
                print!("{}", report_text(&report));
            }
        });
        bar.inc(1);
        reports.push(report);
    }
    bar.finish_and_clear();
    if reports.len() > 1 {
        let mut sum = total(&reports);
        if layers.windows(2).all(|p| p[1].input == p[0].output()) {
            sum["chained"] = json!(time_chain(&layers, &options, &settings)?);
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

/// The largest `--peers` file read (bench_peers.py's JSON of the suite is
/// about 50 KiB).
const MAX_PEERS_BYTES: u64 = 64 << 20;

fn read_peers(path: &std::path::Path) -> Result<serde_json::Value, Failure> {
    let io = |message: String| {
        Failure::Input(convjit::Error::Io {
            path: path.to_path_buf(),
            message,
        })
    };
    // bench_peers.py writes tens of KiB; a limit keeps `--peers /dev/zero`
    // from taking memory without end.
    let bytes = convjit::npy::read_limited(path, MAX_PEERS_BYTES, |_| Ok(()))
        .map_err(|e| Failure::Input(convjit::DataError::from(e).into()))?;
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| io(format!("not JSON ({e})")))?;
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
        out += "  chained: the layers one after another, each on the previous one's output\n  \
                (jit: one Network, one arena of buffers; jit-apart: the kernels one by one)\n";
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

fn report_text(r: &serde_json::Value) -> String {
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
        "variant", "median us", "GFLOP/s", "% Zen4 128-bit", "% meas. 128-bit", widest
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
