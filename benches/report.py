#!/usr/bin/env python3
"""Renders BENCHMARKS.md from one session's measurements:

    for i in 1 2 3; do target/release/convjit bench benches/suite.conv --json --rounds 3 \
        --no-interp --threads 1; target/release/convjit bench examples/mobilenet_v2.conv --json \
        --rounds 3 --no-interp --threads 1 --layer mbv2_inverted_residual; done > /tmp/convjit.json
    python3 ../shared/peers/bench_peers.py --fw ort,openvino,tflite,litert --no-stages \
        --rounds 2 --out-json /tmp/peers.json --out-md /tmp/peers.md   # in the peers' venv
    python3 benches/report.py /tmp/convjit.json /tmp/peers.json > BENCHMARKS.md

The MobileNet v2 body (the whole network, one and two threads, beside the peers) comes from
benches/mobilenet_v2_peers.py's JSON; `--mnv2 FILE` appends its section to the report above,
or, alone, prints only that section (to replace the "## MobileNet v2 body" section of
BENCHMARKS.md without re-measuring the suite):

    cargo build --release
    /tmp/peersenv/bin/python benches/mobilenet_v2_peers.py --convjit target/release/convjit \
        --rounds 3 --json /tmp/mnv2_peers.json
    python3 benches/report.py --mnv2 /tmp/mnv2_peers.json > /tmp/mnv2.md

The image filters beside OpenCV and the grouped convolutions beside ONNX Runtime come from
their own runs (W: the filters' weights, `python3 examples/filters_weights.py W`):

    for f in gauss5x5_c1 gauss7x7_c1 box9x9_c1 gauss5x5_c3 gauss7x7_c3 box9x9_c3 \
        sobel_dxdy_c1 laplace3x3_c1; do target/release/convjit bench examples/filters.conv \
        --layer $f --weights W/$f.npz --json --rounds 2 --no-interp --no-baselines --threads 1; \
        done > F.json
    target/release/convjit bench examples/filters.conv --layer gauss5x5_c1 --json --rounds 3 \
        --no-interp --no-baselines --threads 1 > R.json   # random weights: the unseparated 5x5
    python ../shared/peers/bench_filters.py --rounds 2 --out-json CV.json
    python ../shared/peers/machine_peak.py > PEAK.txt
    target/release/convjit bench benches/grouped.conv --json --rounds 3 --no-interp \
        --threads 1 > G.json
    python benches/grouped_peers.py --rounds 3 --json GP.json
    python3 benches/report.py ... --filters F.json CV.json R.json PEAK.txt --grouped G.json GP.json

(The session that made BENCHMARKS.md ran all of these in turn, one command at a time.)
Every `convjit bench` here has `--threads 1`: the tables compare one thread with the peers on
one (`jit`), and show every core beside it (`jit-{cores}threads`); `convjit run` and `bench`
without it use every core.

Several runs of a layer in the first file are merged as the peers' script
merges its runs: per variant the lowest median time (load from other tenants
of the machine only slows a run down), per layer the lowest compile and
cache-hit times. Only the standard library: the numbers come from the two
JSON files."""

import json
import math
import sys

PEERS = {"ort": "ONNX Runtime", "openvino": "OpenVINO", "tflite": "TFLite+XNNPACK",
         "litert": "LiteRT+XNNPACK"}
# The other code generators' rows (`jit` is the chosen one).
GENERATORS = ("jit-cranelift", "jit-avx2", "jit-avx512")
# The FMA loops `convjit bench` may time (older JSON has only the 128-bit one).
PEAK_BITS = (128, 256, 512)


def summary(ours, w):
    """The ratios the planner issue targets, computed from the same rows."""
    res = {r["layer"]: {v["variant"]: v for v in r["results"]} for r in ours}
    compile_ms = sorted(r["compile_ms"] for r in ours)
    hits = sorted(r["compile_cache_hit_us"] for r in ours)
    w("Summary of these runs:")
    w("")
    w(f"- compile: median {compile_ms[len(compile_ms) // 2]:.2f} ms per layer "
      f"(max {compile_ms[-1]:.2f}); cache hit median {hits[len(hits) // 2]:.2f} us")
    fused = [(l, v["jit-unfused"]["median_us"] / v["jit"]["median_us"])
             for l, v in res.items() if "jit-unfused" in v]
    if fused:
        w("- fused vs unfused (time ratio, > 1 = fusion wins): "
          + ", ".join(f"{l} {x:.2f}x" for l, x in fused))
    wide = [(l, v["sse128"]["median_us"] / v["avx256"]["median_us"]) for l, v in res.items()
            if "sse128" in v and "avx256" in v]
    if wide:
        xs = sorted(x for _, x in wide)
        w(f"- avx256 vs sse128 baseline (time ratio, > 1 = 256 bits win): median {xs[len(xs) // 2]:.2f}x "
          f"(range {xs[0]:.2f}-{xs[-1]:.2f})")
    gens = sorted({k for v in res.values() for k in v if k in GENERATORS})
    for g in gens:
        xs = [(l, v[g]["median_us"] / v["jit"]["median_us"]) for l, v in res.items() if g in v]
        w(f"- jit vs {g} (time ratio, > 1 = jit faster): "
          + ", ".join(f"{l} {x:.2f}x" for l, x in xs))
    sse = [(l, v["sse128"]["median_us"] / v["jit"]["median_us"]) for l, v in res.items() if "sse128" in v]
    if sse:
        low = [f"{l} {x:.2f}x" for l, x in sse if x < 1.0]
        w(f"- jit vs the sse128 baseline: {sum(x >= 1.0 for _, x in sse)} of {len(sse)} layers "
          f"at >= 1.0x" + (f"; below: {', '.join(low)}" if low else ""))
    # Compute-bound layers take tens or hundreds of copies' time: only the
    # memory-bound ones, within 4 copies, are listed.
    copies = [(r["layer"], res[r["layer"]]["jit"]["median_us"] / r["copy_io_us"])
              for r in ours if r.get("copy_io_us")]
    copies = [(l, x) for l, x in copies if x < 4]
    if copies:
        w("- jit vs a copy of the layer's input to its output, timed in the same rounds "
          "(memory-bound layers whose input and output are the same size; time ratio, "
          "1 = as fast as copying): " + ", ".join(f"{l} {x:.2f}x" for l, x in copies))
    two = [(r["layer"], v) for r in ours if r["macs"] >= 10_000_000
           for k, v in {x["variant"]: x for x in r["results"]}.items() if k.endswith("threads")]
    if two:
        w("- two threads vs one on layers of >= 10M MACs: " + ", ".join(
            f"{l} {res[l]['jit']['median_us'] / v['median_us']:.2f}x" for l, v in two))
    w("")


def best_peer_us(peers, layer):
    """The fastest peer's median time on `layer`, or None."""
    p = peers.get(layer, {}).get("results", {})
    times = [p.get(fw, {}).get("full", {}).get("us_median") for fw in PEERS]
    return min((t for t in times if t), default=None)


def roof_bound(ours, peers, w):
    """How far direct f32 code could take the geomean of jit / best peer: each layer at
    2 x MACs / (the widest FMA peak measured in its rounds) if that is faster than now.
    Memory-bound layers cannot reach that time, so the bound is optimistic; MACs are
    nominal (padding taps included, which the kernels skip: Inception's 7x7 on 17x17
    computes 81% of them), so a padded layer's term can go a little lower. A target well
    below it needs fewer multiplies (Winograd) or more cores, not better code."""
    now, roof = [], []
    for r in ours:
        best = best_peer_us(peers, r["layer"])
        peak = max((r.get(f"measured_peak_{b}_gflops") or 0) for b in PEAK_BITS)
        if not best or not peak:
            continue
        t = {v["variant"]: v for v in r["results"]}["jit"]["median_us"]
        now.append(t / best)
        roof.append(min(t, 2 * r["macs"] / peak / 1e3) / best)
    if now:
        g = lambda xs: math.exp(sum(math.log(x) for x in xs) / len(xs))
        w(f"Geomean of jit time / best peer time over {len(now)} layers: {g(now):.3f}; with "
          f"every layer at the widest measured FMA peak where that is faster: {g(roof):.3f} "
          "(about the floor of direct f32 code here: MACs are nominal, and a layer whose "
          "padding taps are skipped can go a little below its term).")
        w("")


def merge(runs):
    """One entry per layer (first-seen order), each variant at its fastest."""
    by_layer = {}
    for r in runs:
        if r["layer"] not in by_layer:
            by_layer[r["layer"]] = json.loads(json.dumps(r))
            by_layer[r["layer"]]["runs"] = 1
            continue
        m = by_layer[r["layer"]]
        m["runs"] += 1
        for key in ("compile_ms", "compile_cache_hit_us", "copy_io_us"):
            if r.get(key) is not None:
                m[key] = min(m.get(key) or r[key], r[key])
        for bits in PEAK_BITS:
            key = f"measured_peak_{bits}_gflops"
            if r.get(key):
                m[key] = max(m.get(key) or 0, r[key])
        if (r.get("widest_measured_peak_bits") or 0) > (m.get("widest_measured_peak_bits") or 0):
            m["widest_measured_peak_bits"] = r["widest_measured_peak_bits"]
        best = {v["variant"]: v for v in m["results"]}
        for v in r["results"]:
            if v["variant"] in best and v["median_us"] < best[v["variant"]]["median_us"]:
                best[v["variant"]].update(v)
    for m in by_layer.values():
        peak = m.get("measured_peak_128_gflops")
        widest = m.get("widest_measured_peak_bits")
        wpeak = m.get(f"measured_peak_{widest}_gflops") if widest else None
        for v in m["results"]:
            if peak:
                v["pct_measured_peak_128"] = round(100 * v["gflops"] / peak, 1)
            if wpeak:
                v["pct_widest_measured_peak"] = round(100 * v["gflops"] / wpeak, 1)
    return list(by_layer.values())


def main(convjit_path, peers_path, session):
    # Layer records only (`convjit bench --json --total` adds a line of sums, "total": true).
    ours = merge([r for r in (json.loads(line) for line in open(convjit_path) if line.strip())
                  if "layer" in r])
    peers = {l["name"]: l for l in json.load(open(peers_path))["layers"]}
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    hosts = sorted({(h["l1d_bytes"] >> 10, h["l2_bytes"] >> 10, h["cores"])
                    for h in (r.get("host") for r in ours) if h})
    host = "; ".join(f"L1d {a} KiB, L2 {b} KiB per core, {c} cores" for a, b, c in hosts)
    w(f"Measured in one session ({session}) on a shared, noisy VM (the planner saw:")
    w(f"{host or 'not recorded'}): single thread unless a column says otherwise, batch 1,")
    w("seeded data, median time per call: the lowest of the rounds' medians over")
    w(f"{max(r['runs'] for r in ours)} runs of the suite, as the peers' script reports its best round")
    w("(compile and cache-hit times: the lowest of the runs).")
    w("GFLOP/s = 2 x MACs / time (MACs counted nominally, padding taps included).")
    w("'% peak' is against the FMA peak of the widest vectors the CPU has, measured by")
    w("`convjit bench` in the same rounds (a loop of independent FMAs: the machine's")
    w("ceiling at that moment; on this VM often above or below the nominal figure).")
    w("")
    w("Peers: ONNX Runtime, OpenVINO, TFLite+XNNPACK and LiteRT+XNNPACK timed by")
    w("`shared/peers/bench_peers.py --no-stages --rounds 2` in the same session (best round,")
    w("as above); 'best peer' is the fastest of them. Regenerate: see `benches/report.py`")
    w("(the commands are in its docstring). A layer run alone in a process")
    w("(mbv2_inverted_residual) pays the JIT's one-time setup in its compile time.")
    w("")
    w("Variants: **jit** = what `convjit run --threads 1` uses (the widest code generator the CPU")
    w("runs, planned: fused where the planner chose, one thread; `run` and `bench` use every")
    w("core unless told `--threads 1`, as the tables here are); **avx2** / **cranelift**")
    w("= the same plan from the AVX2 generator and from Cranelift (128-bit vectors, the")
    w("portable generator); **jit-unfused** = the same kernels stage by stage;")
    w("**jit-2t** = `convjit bench`'s `jit-{cores}threads` variant, the planned kernel on")
    w("all the host's cores (2 here; the planner keeps one thread for a group with under")
    w("`MIN_CYCLES_PER_THREAD` of estimated work per thread, e.g. the textbook_sep layer);")
    w("**sse128** = hand-written 128-bit")
    w("SSE/FMA kernels; **avx256** = the same hand-written at 256 bits (AVX2/FMA, 6x16")
    w("register blocks); **gemm** = the `gemm` crate (im2col for conv; depthwise stages")
    w("of a mixed layer run sse128). GFLOP/s in the variant columns.")
    w("")
    w("| layer | MACs | jit GF/s (time) | generator | % peak | avx2 | cranelift | jit-unfused | jit-2t | sse128 | avx256 | gemm | best peer us (GF/s) | jit / best peer | compile ms | cache hit us |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ours:
        res = {v["variant"]: v for v in r["results"]}
        jit = res["jit"]

        def gf(name):
            for k, v in res.items():
                if k == name or (name == "jit-2t" and k.startswith("jit-") and k.endswith("threads")):
                    return f"{v['gflops']:.1f}"
            return "-"

        p = peers.get(r["layer"], {}).get("results", {})
        best = None
        for fw, label in PEERS.items():
            t = p.get(fw, {}).get("full", {}).get("us_median")
            if t and (best is None or t < best[1]):
                best = (label, t)
        if best:
            peer = f"{best[0]} {best[1]:.1f} us ({2 * r['macs'] / best[1] / 1e3:.1f})"
            ratio = f"{best[1] / jit['median_us']:.2f}x"
        else:
            peer, ratio = "-", "-"
        wide = jit.get("pct_widest_measured_peak")
        wide = f"{wide:.0f}%" if wide is not None else "-"
        w(f"| {r['layer']} | {r['macs']:,} | {jit['gflops']:.1f} ({jit['median_us']:.1f} us) | "
          f"{r.get('backend', '-')} | {wide} | {gf('jit-avx2')} | {gf('jit-cranelift')} | "
          f"{gf('jit-unfused')} | {gf('jit-2t')} | {gf('sse128')} | "
          f"{gf('avx256')} | {gf('gemm')} | {peer} | {ratio} | {r['compile_ms']:.2f} | "
          f"{r['compile_cache_hit_us']:.2f} |")
    w("")
    peaks = [r["measured_peak_128_gflops"] for r in ours if r.get("measured_peak_128_gflops")]
    if peaks:
        peaks.sort()
        w(f"Measured 128-bit FMA peak during these runs: median {peaks[len(peaks) // 2]:.1f} GFLOP/s "
          f"(range {peaks[0]:.1f}-{peaks[-1]:.1f}) against 58.7 nominal.")
        w("")
    for bits in PEAK_BITS[1:]:
        wide = sorted(r[f"measured_peak_{bits}_gflops"] for r in ours
                      if r.get(f"measured_peak_{bits}_gflops"))
        if wide:
            w(f"Measured {bits}-bit FMA peak: median {wide[len(wide) // 2]:.1f} GFLOP/s "
              f"(range {wide[0]:.1f}-{wide[-1]:.1f}).")
            w("")
    roof_bound(ours, peers, w)
    summary(ours, w)
    w("'jit / best peer' > 1 means convjit is faster. 'cache hit' is the code lookup of a")
    w("second compile of the same shapes; packing that kernel's weights comes on top")
    w("(`pack_weights_us` in the JSON). Fusion groups the planner chose:")
    w("")
    for r in ours:
        fused = [g for g in r["groups"] if len(g["stages"]) > 1]
        if fused:
            desc = "; ".join(f"[{', '.join(g['stages'])}] in bands of {g['band_rows']} rows" for g in fused)
            w(f"- {r['layer']}: {desc}")
    w("")
    w("Peers' per-layer details (all frameworks, spread across rounds) are in the")
    w("session's `--out-md` file; `shared/peers/RESULTS.md` has an earlier full run.")
    print("\n".join(out))


def mnv2_section(path):
    """The "MobileNet v2 body" section from benches/mobilenet_v2_peers.py's JSON."""
    r = json.load(open(path))
    s = r["session"]
    out = []
    w = out.append
    w("## MobileNet v2 body")
    w("")
    w(f"Keras' own `MobileNetV2(include_top=False)` (224x224x3 -> 7x7x1280, seeded random weights and "
      f"BatchNorm statistics, BatchNorm folded) as `{r['conv']}`: the stem, 17 inverted-residual "
      f"blocks, the last 1x1, one layer per block ({sum(l['macs'] for l in r['per_layer']):,} MACs). "
      f"Measured {s['start']} - {s['end']}, {s['cpu']}, {s['cores']} cores, load average "
      f"{s['load_before'][0]:.1f} before and {s['load_after'][0]:.1f} after, by "
      f"`benches/mobilenet_v2_peers.py --rounds {r['rounds']} --seconds {r['seconds']}` (the command "
      f"is in `benches/report.py`): every round times every framework in turn, each figure is its "
      f"best round. convjit's generator: {r['convjit']['backend']}.")
    w("")
    w("The peers run the whole body in one call: TFLite and LiteRT with XNNPACK on the flatbuffer "
      "converted from the Keras model, ONNX Runtime and OpenVINO (f32) on the ONNX graph of the "
      "folded layers. For convjit, **sum** is the sum over the layers of `convjit bench`'s medians "
      "(each layer alone, back to back: its weights and buffers stay in the caches), **chained** the "
      "layers run one after another on the previous one's output as a network runs them (`convjit "
      "bench`'s total, `chained`): the like-for-like figure. Ratios are the best peer's time over "
      "convjit's: > 1 means convjit is faster.")
    w("")
    peers = list(next(iter(r["body"].values()))["peers_us"])
    w("| threads | " + " | ".join(f"{p} us" for p in peers)
      + " | convjit sum us | convjit chained us | best peer / sum | best peer / chained |")
    w("|---" * (len(peers) + 5) + "|")
    for t, b in r["body"].items():
        fw, us = min(b["peers_us"].items(), key=lambda kv: kv[1])
        w(f"| {t} | " + " | ".join(f"{b['peers_us'][p]:.0f}" for p in peers)
          + f" | {b['convjit_sum_us']:.0f} | {b['convjit_chained_us']:.0f} | "
          f"{us / b['convjit_sum_us']:.2f}x ({fw}) | {us / b['convjit_chained_us']:.2f}x ({fw}) |")
    w("")
    target = []
    for t, b in r["body"].items():
        cells = [f"{p} / convjit {b['peers_us'][p] / b['convjit_sum_us']:.2f}x "
                 f"(chained {b['peers_us'][p] / b['convjit_chained_us']:.2f}x)"
                 for p in ("TFLite+XNNPACK", "ONNX Runtime") if p in b["peers_us"]]
        target.append(f"{t} thread{'s' if t != '1' else ''}: " + ", ".join(cells))
    w("Issue 10's target, the sum over the layers faster than TFLite+XNNPACK and ONNX Runtime on "
      "one thread and on two: " + "; ".join(target) + ".")
    w("")
    # The 1-minute load average counts this session's own benchmarks (one
    # busy core each); more than the cores means other work shared them.
    busy = max(s["load_before"][0], s["load_after"][0])
    if busy > s["cores"]:
        w(f"**The machine was busy** (load average up to {busy:.1f} on {s['cores']} cores: other "
          "tenants at work): every figure is an upper bound, the two-thread ones most of all (a "
          "second thread waits for a core the other tenants hold). Re-measure on a quiet machine "
          "before drawing conclusions from the ratios.")
        w("")
    errs = next(iter(r["body"].values()))["peers_max_err"]
    w(f"Max |error| against Keras' output (max |value| {r['keras']['max_abs_out']:.3g}, tolerance "
      f"{r['keras']['tolerance']:.3g}): convjit {r['convjit']['max_err_vs_keras']:.2g} (`convjit run` layer "
      "by layer with the Keras weights), " + ", ".join(f"{p} {e:.2g}" for p, e in errs.items()) + ".")
    w("")
    spread = []
    for t, b in r["body"].items():
        sums = [c["sum_us"] for c in b["convjit_rounds"]]
        chained = [c["chained_us"] for c in b["convjit_rounds"]]
        peer = "; ".join(f"{p} {min(v):.0f}-{max(v):.0f}" for p, v in b["peers_rounds_us"].items())
        spread.append(f"{t} thread{'s' if t != '1' else ''}: convjit sum {min(sums):.0f}-{max(sums):.0f}, chained "
                      f"{min(chained):.0f}-{max(chained):.0f}; {peer}")
    w("Spread over the rounds (us): " + ". ".join(spread) + ".")
    w("")
    rows = [l for l in r["per_layer"] if "peers_us" in l]
    if rows:
        w("Each layer alone (convjit: `convjit bench`, one thread and 2; the peers: a one-layer "
          "Keras model converted to TFLite, a one-layer ONNX graph, fed convjit's input to that "
          "layer and checked against convjit's output for it). Best peer / convjit, > 1 means "
          "convjit is faster:")
        w("")
        w("| layer | Keras block | MACs | convjit 1t us | best peer 1t us | 1t ratio | convjit 2t us "
          "| best peer 2t us | 2t ratio |")
        w("|---|---|---|---|---|---|---|---|---|")
        behind = {"1": [], "2": []}
        for l in rows:
            cells = []
            for t in ("1", "2"):
                fw, us = min(l["peers_us"][t].items(), key=lambda kv: kv[1])
                ours = l["convjit_us"][t]
                cells += [f"{ours:.1f}", f"{fw} {us:.1f}", f"{us / ours:.2f}x"]
                if us < ours:
                    behind[t].append(f"{l['layer']} {us / ours:.2f}x ({fw})")
            w(f"| {l['layer']} | {l['keras_block']} | {l['macs']:,} | " + " | ".join(cells) + " |")
        w("")
        for t, label in (("1", "one thread"), ("2", "two threads")):
            w(f"- Behind the best peer on {label}: " + (", ".join(behind[t]) if behind[t] else "none") + ".")
        worst = max(max(l["peers_max_err_vs_convjit"].values()) / l["tolerance"] for l in rows)
        w(f"- Every peer's one-layer output agrees with convjit's: the worst difference is "
          f"{100 * worst:.2g}% of its tolerance (1e-3 x max(1, max |value|)).")
    return "\n".join(out).rstrip("\n")


def records(path):
    """`convjit bench --json` layer records of a file, merged per layer."""
    recs = [r for r in (json.loads(line) for line in open(path) if line.strip().startswith("{"))
            if "layer" in r]
    if any(v["variant"] == "jit-1thread" for r in recs for v in r["results"]):
        # Without --threads 1, "jit" uses every core: the tables need it on one.
        sys.exit(f"{path}: run `convjit bench` with --threads 1 (see this script's docstring)")
    return merge(recs)


def variants(r):
    return {v["variant"]: v["median_us"] for v in r["results"]}


def filters_section(convjit_path, opencv_path, random_path=None, peak_path=None):
    """The image filters beside OpenCV (issue 12), from `convjit bench --json` per filter
    (with its weights) and shared/peers/bench_filters.py's JSON; with the random-weights
    5x5 run and machine_peak.py's output, the 5x5 depthwise against the copy bandwidth."""
    ours = {r["layer"]: r for r in records(convjit_path)}
    cv = json.load(open(opencv_path))["filters"]
    out = []
    w = out.append
    w("## Image filters (issue 12's workload)")
    w("")
    w("`examples/filters.conv` with the weights of `examples/filters_weights.py` (the same layers and")
    w("weights as `shared/peers/bench_filters.py --write-conv/--write-weights`), 1920x1080 f32 images,")
    w("single thread, in the same session as the tables above: `convjit bench examples/filters.conv")
    w("--layer L --weights W/L.npz --json --rounds 2 --no-interp --no-baselines` per layer, and OpenCV")
    w("(`bench_filters.py --rounds 2`: the fastest of `filter2D`, `sepFilter2D` and the dedicated call")
    w("for the same result). 'convjit' separates rank-1 kernels (`S.col` then `S.row`) where the")
    w("cost model expects a gain; 'unseparated' is `--no-separate`'s kernel in the same rounds.")
    w("")
    w("| filter | convjit us | unseparated us | separated / unseparated | jit-avx2 us | 2 threads us "
      "| OpenCV fastest call us | convjit / OpenCV (> 1: convjit faster) |")
    w("|---|---|---|---|---|---|---|---|")
    for name, r in ours.items():
        v = variants(r)
        jit = v["jit"]
        c = cv.get(name)
        # OpenCV's fastest call per output (Sobel: dx and dy are two
        # calls), summed: bench_filters.py's `best_us`.
        best = None
        if c:
            per_out = {}
            for call, us in c["calls_us"].items():
                o = call[call.index("["):]
                if o not in per_out or us < per_out[o][1]:
                    per_out[o] = (call, us)
            best = (" + ".join(k for k, _ in per_out.values()), c["best_us"])
        unsep = v.get("jit-unseparated")
        w(f"| {name} | {jit:.0f} | {f'{unsep:.0f}' if unsep else '-'} | "
          f"{f'{unsep / jit:.2f}x' if unsep else '-'} | "
          f"{v.get('jit-avx2', 0):.0f} | {v.get('jit-2threads', 0):.0f} | "
          f"{f'{best[0]} {best[1]:.0f}' if best else '-'} | "
          f"{f'{best[1] / jit:.2f}x' if best else '-'} |")
    if random_path and peak_path:
        r = records(random_path)[0]
        us = variants(r)["jit"]
        bytes_ = r["min_traffic_bytes"]
        import re
        text = open(peak_path).read()
        memcpy = float(re.search(r"memcpy ([0-9.]+) GB/s", text).group(1))
        npcopy = re.search(r"numpy copy .*?: ([0-9.]+) GB/s", text)
        gbs = bytes_ / us / 1e3
        w("")
        w(f"The 5x5 depthwise on 1920x1080x1 with random (not separable) weights "
          f"(`convjit bench examples/filters.conv --layer gauss5x5_c1 --rounds 3`): {us:.0f} us for "
          f"{bytes_ / 1e6:.1f} MB in and out, {gbs:.1f} GB/s, {100 * gbs / memcpy:.0f}% "
          f"of the {memcpy:.1f} GB/s memcpy `shared/peers/machine_peak.py` measured "
          f"in the same session"
          + (f" ({100 * gbs / float(npcopy.group(1)):.0f}% of its numpy copy, {npcopy.group(1)} GB/s)."
             if npcopy else "."))
    return "\n".join(out)


def grouped_section(convjit_path, peers_path):
    """Grouped convolutions against ONNX Runtime and OpenVINO (issue 11): `convjit bench
    benches/grouped.conv --json --rounds 3 --no-interp` and benches/grouped_peers.py's JSON."""
    ours = {r["layer"]: r for r in records(convjit_path)}
    peers = json.load(open(peers_path))
    out = []
    w = out.append
    w("## Grouped convolutions")
    w("")
    w("`benches/grouped.conv` (ShuffleNet's grouped 1x1, ResNeXt's grouped 3x3), single thread, in")
    w("this session: `convjit bench benches/grouped.conv --json --rounds 3 --no-interp` and")
    w("`benches/grouped_peers.py --rounds 3` (each layer a one-node ONNX model, checked against a")
    w("float64 reference). AVX-512 hands groups of at most 8 outputs to the AVX2 code")
    w("(`plan::stage_target`).")
    w("")
    w("| layer | MACs | convjit us (GFLOP/s) | jit-avx2 us | cranelift us | ONNX Runtime us | OpenVINO us "
      "| ONNX Runtime / convjit |")
    w("|---|---|---|---|---|---|---|---|")
    for name, r in ours.items():
        v = variants(r)
        jit = v["jit"]
        p = peers.get(name, {})
        ort = p.get("ort")
        w(f"| {name} | {r['macs']:,} | {jit:.0f} ({2 * r['macs'] / jit / 1e3:.0f}) | "
          f"{v.get('jit-avx2', 0):.0f} | {v.get('jit-cranelift', 0):.0f} | {ort or '-'} | "
          f"{p.get('openvino', '-')} | {f'{ort / jit:.2f}x' if ort else '-'} |")
    return "\n".join(out)


def take(args, flag, n):
    """Removes `flag` and its `n` values from `args`; the values, or None."""
    if flag not in args:
        return None
    i = args.index(flag)
    vals = args[i + 1:i + 1 + n]
    del args[i:i + 1 + n]
    return vals


if __name__ == "__main__":
    args = sys.argv[1:]
    mnv2 = take(args, "--mnv2", 1)
    filters = take(args, "--filters", 4)
    grouped = take(args, "--grouped", 2)
    sections = []
    if args:
        sections.append(None)
        main(args[0], args[1], args[2] if len(args) > 2 else "see git log")
    if filters:
        sections.append(filters_section(*filters))
    if grouped:
        sections.append(grouped_section(*grouped))
    if mnv2:
        sections.append(mnv2_section(mnv2[0]))
    for i, text in enumerate(t for t in sections if t):
        if i or args:
            print()
        print(text)
