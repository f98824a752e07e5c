//! A network's layers together (`convjit bench` over a file of several):
//! the sum of each variant's per-layer medians, and the layers run one
//! after another as a network runs them.

use crate::harness::{best_of_rounds, interleaved_medians, Aligned, Timed};
use crate::{round, Settings};
use convjit::{Error, Kernel, Layer, Network, Weights};
use serde_json::json;
use std::time::Duration;

/// The variant that stands in for `jit-unfused` on a layer the planner
/// did not fuse: there the planned kernel already runs stage by stage.
const UNFUSED_FALLBACK: (&str, &str) = ("jit-unfused", "jit");

/// The sum over `reports` (one per layer): for each variant that ran on
/// every layer (FMA loops left out), the sum of its medians and the
/// GFLOP/s of all the layers' MACs in that time. `jit-unfused`, timed only
/// on layers that fuse, counts `jit` on the others (the same kernel).
pub fn total(reports: &[serde_json::Value]) -> serde_json::Value {
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
/// output, in interleaved rounds. Timed alone, back to back, a layer finds
/// its weights and buffers in the caches; here the other layers have
/// evicted them, as when the peers time a whole network. The layers' sum
/// leaves that out.
///
/// Variants: `jit`, the layers as one [`Network`] (one arena of buffers);
/// on a host of several cores the same on one thread or every core
/// (`layer::thread_variant`); and `jit-apart`, the planned kernels run one
/// by one, each with its own buffers and output tensor (what the arena
/// saves).
pub fn time_chain(
    layers: &[Layer],
    options: &convjit::Options,
    settings: &Settings,
) -> Result<Vec<serde_json::Value>, Error> {
    let batch = settings.batch;
    let cores = convjit::Host::detect().cores;
    // The weights bench_layer timed (same seed); the code is a cache hit.
    let compile = |o: &convjit::Options| {
        layers
            .iter()
            .map(|l| Kernel::compile_with(l, &Weights::random(l, 1), o))
            .collect::<Result<Vec<_>, _>>()
    };
    let x = Aligned::random(layers[0].input.len() * batch, 2)?;
    let output = || Aligned::zeros(layers[layers.len() - 1].output().len() * batch);
    let mut variants: Vec<Timed> = Vec::new();
    let mut networks = vec![("jit".to_string(), options.clone())];
    networks.extend(crate::layer::thread_variant(options, cores));
    for (name, o) in networks {
        let net = Network::new(compile(&o)?)?;
        let (input, mut out) = (Aligned::from(&x)?, output()?);
        // Once with the error surfaced (its run buffers made), then timed.
        net.run(&input, &mut out, batch)?;
        let run = move || net.run(&input, &mut out, batch).expect("ran once above");
        variants.push((name, Box::new(run)));
    }
    let kernels = compile(options)?;
    let mut tensors = vec![Aligned::from(&x)?];
    for l in layers {
        tensors.push(Aligned::zeros(l.output().len() * batch)?);
    }
    for (i, k) in kernels.iter().enumerate() {
        let (done, rest) = tensors.split_at_mut(i + 1);
        k.run(&done[i], &mut rest[0], batch)?;
    }
    let apart = move || {
        for (i, k) in kernels.iter().enumerate() {
            let (done, rest) = tensors.split_at_mut(i + 1);
            k.run(&done[i], &mut rest[0], batch)
                .expect("ran once above");
        }
    };
    variants.push(("jit-apart".into(), Box::new(apart)));
    let budget = Duration::from_secs_f64(settings.seconds);
    let rounds = settings.rounds;
    let times = best_of_rounds(rounds, || {
        interleaved_medians(budget / rounds, &mut variants)
    });
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
