#!/usr/bin/env python3
"""Renders BENCHMARKS.md from one session's measurements:

    for i in 1 2 3; do target/release/convjit bench benches/suite.conv --json --rounds 3 \
        --no-interp; target/release/convjit bench examples/mobilenet_v2.conv --json \
        --rounds 3 --no-interp --layer mbv2_inverted_residual; done > /tmp/convjit.json
    python3 ../shared/peers/bench_peers.py --fw ort,openvino,tflite,litert --no-stages \
        --rounds 2 --out-json /tmp/peers.json --out-md /tmp/peers.md   # in the peers' venv
    python3 benches/report.py /tmp/convjit.json /tmp/peers.json > BENCHMARKS.md

Several runs of a layer in the first file are merged as the peers' script
merges its runs: per variant the lowest median time (load from other tenants
of the machine only slows a run down), per layer the lowest compile and
cache-hit times. Only the standard library: the numbers come from the two
JSON files."""

import json
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
    two = [(r["layer"], v) for r in ours if r["macs"] >= 10_000_000
           for k, v in {x["variant"]: x for x in r["results"]}.items() if k.endswith("threads")]
    if two:
        w("- two threads vs one on layers of >= 10M MACs: " + ", ".join(
            f"{l} {res[l]['jit']['median_us'] / v['median_us']:.2f}x" for l, v in two))
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
        for key in ("compile_ms", "compile_cache_hit_us"):
            m[key] = min(m[key], r[key])
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
    ours = merge([json.loads(line) for line in open(convjit_path) if line.strip()])
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
    w("Variants: **jit** = what `convjit run` uses (the widest code generator the CPU")
    w("runs, planned: fused where the planner chose, one thread); **avx2** / **cranelift**")
    w("= the same plan from the AVX2 generator and from Cranelift (128-bit vectors, the")
    w("portable generator); **jit-unfused** = the same kernels stage by stage;")
    w("**jit-2t** = `convjit bench`'s `jit-{cores}threads` variant, the planned kernel on")
    w("all the host's cores (2 here; the planner keeps one thread for groups under 2M MACs")
    w("per thread, e.g. both textbook layers);")
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


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else "see git log")
