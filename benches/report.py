#!/usr/bin/env python3
"""Renders BENCHMARKS.md from one session's measurements:

    target/release/convjit bench benches/suite.conv --json > /tmp/convjit.json
    python3 ../shared/peers/bench_peers.py --fw ort,tflite --no-stages --rounds 2 \
        --out-json /tmp/peers.json --out-md /tmp/peers.md     # in the peers' venv
    python3 benches/report.py /tmp/convjit.json /tmp/peers.json > BENCHMARKS.md

Only the standard library: the numbers come from the two JSON files."""

import json
import sys

PEERS = {"ort": "ONNX Runtime", "tflite": "TFLite+XNNPACK"}


def main(convjit_path, peers_path, session):
    ours = [json.loads(line) for line in open(convjit_path) if line.strip()]
    peers = {l["name"]: l for l in json.load(open(peers_path))["layers"]}
    out = []
    w = out.append
    w("# Benchmarks")
    w("")
    w(f"Measured in one session ({session}) on this project's machine kind (2-core AMD")
    w("Zen 4 VM, shared and noisy): single thread unless a column says otherwise, batch 1,")
    w("seeded data, median time per call. GFLOP/s = 2 x MACs / time (MACs counted")
    w("nominally, padding taps included). **Cranelift's x64 backend emits 128-bit vectors")
    w("only**, so '% peak' is against the 128-bit FMA peak (58.7 GFLOP/s); ONNX Runtime,")
    w("XNNPACK and the `gemm` crate use 256-bit vectors (peak 117.4).")
    w("")
    w("Regenerate: see `benches/report.py` (the commands are in its docstring).")
    w("")
    w("Variants: **jit** = what `convjit run` uses (planned: fused where the planner")
    w("chose, one thread); **jit-unfused** = the same kernels stage by stage;")
    w("**jit-2t** = the planned kernel with two threads requested (the planner keeps")
    w("one thread for groups under 2M MACs per thread, e.g. both textbook layers);")
    w("**sse128** = hand-written 128-bit")
    w("SSE/FMA kernels; **gemm** = the `gemm` crate (im2col for conv; depthwise stages")
    w("of a mixed layer run sse128); **naive** = plain Rust loops.")
    w("")
    w("| layer | MACs | jit GF/s | % 128b peak | jit-unfused | jit-2t | sse128 | gemm | naive | best peer | jit / best peer | compile ms |")
    w("|---|---|---|---|---|---|---|---|---|---|---|---|")
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
        w(f"| {r['layer']} | {r['macs']:,} | {jit['gflops']:.1f} ({jit['median_us']:.1f} us) | "
          f"{jit['pct_peak_128']:.0f}% | {gf('jit-unfused')} | {gf('jit-2t')} | {gf('sse128')} | "
          f"{gf('gemm')} | {gf('naive')} | {peer} | {ratio} | {r['compile_ms']:.1f} |")
    w("")
    w("'jit / best peer' > 1 means convjit is faster. Fusion groups the planner chose:")
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
