#!/usr/bin/env python3
"""MobileNet v2's convolutional body in bf16: convjit (`--precision bf16`, chained) against
OpenVINO with `INFERENCE_PRECISION_HINT=bf16`, single thread, in one session:

    cargo build --release
    python3 benches/mobilenet_v2_bf16.py --convjit target/release/convjit --rounds 5

The network is `examples/mobilenet_v2.conv` (Keras' MobileNetV2 body with BatchNorm folded;
`benches/mobilenet_v2_peers.py` checks it against Keras), with seeded random weights; the
ONNX graph OpenVINO runs is built from `convjit plan --json` of that file by the shared
script's `build_onnx` (`--peers-dir`), so no Keras or TensorFlow is needed. Before timing,
the file is run layer after layer with `convjit run` in f32 and bf16 on the same input and
weights, and compared with OpenVINO's f32 and bf16 outputs (largest error relative to the
largest output): the two engines compute the same network.

Each round times, in turn, OpenVINO f32, OpenVINO bf16 and `convjit bench --total` in f32
and bf16 (`chained`: the layers one after another on the previous one's output, as the
peers run the network; `sum`: each layer alone, back to back). Every figure is the best of
its rounds' medians (load from other tenants only slows rounds down), in microseconds.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV = os.path.join(REPO, "examples", "mobilenet_v2.conv")


def convjit(bin_, *args):
    p = subprocess.run([bin_, *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"convjit {' '.join(args[:2])} failed: {p.stderr.strip()[-400:]}")
    return p.stdout


def network(bin_, seed):
    """The file's layers as the shared script's `build_onnx` takes them, with random weights
    (biases included), and per layer the arrays convjit reads (`.npz` keys)."""
    rng = np.random.default_rng(seed)
    layers, arrays = [], {}
    out = convjit(bin_, "plan", CONV, "--json")
    plans = [json.loads(l) for l in out.splitlines() if l.startswith("{")]
    for p in plans:
        h, w, c = p["input"]
        L = {"name": p["layer"], "H": h, "W": w, "C": c, "residual": False, "stages": []}
        arrs = {}
        for s in p["stages"]:
            op, kh, kw = s["op"]["op"], s["kernel"][0], s["kernel"][1]
            ci, co = s["input"][2], s["output"][2]
            if op == "depthwise":
                m = co // ci
                wt = rng.standard_normal((kh, kw, ci, m)) * np.sqrt(2.0 / (kh * kw))
            else:
                wt = rng.standard_normal((kh, kw, ci, co)) * np.sqrt(1.0 / (kh * kw * ci))
            b = rng.standard_normal(co) * 0.1
            pad = s["padding"]
            L["stages"].append({
                "name": s["name"], "op": "dwconv" if op == "depthwise" else "conv",
                "kernel": [kh, kw], "stride": s["stride"],
                "pads": [[pad["top"], pad["bottom"]], [pad["left"], pad["right"]]],
                "w": wt, "b": b, "act": s["activation"], "C_out": co})
            key = s["weight"]["key"]
            arrs[key] = wt.reshape(s["weight"]["shape"]).astype(np.float32)
            if s.get("bias"):
                arrs[s["bias"]] = b.astype(np.float32)
            if s["residual"]:
                L["residual"] = True
            if s["activation"] not in ("none", "relu6"):
                raise SystemExit(f"{p['layer']}/{s['name']}: activation {s['activation']} not mapped")
        layers.append(L)
        arrays[p["layer"]] = arrs
    return layers, arrays


def convjit_outputs(bin_, d, layers, arrays, x):
    """The file run layer after layer (`convjit run`) in f32 and in bf16."""
    outs = {}
    for precision in ("f32", "bf16"):
        cur = os.path.join(d, "input.npy")
        np.save(cur, x)
        for L in layers:
            w = os.path.join(d, L["name"] + ".npz")
            if not os.path.exists(w):
                np.savez(w, **arrays[L["name"]])
            out = os.path.join(d, f"{precision}_{L['name']}.npy")
            convjit(bin_, "run", CONV, "--layer", L["name"], "--input", cur, "--weights", w,
                    "--output", out, "--precision", precision)
            cur = out
        outs[precision] = np.load(cur)
    return outs


def openvino(model, x, hint):
    import openvino as ov
    core = ov.Core()
    cm = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                            {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                             "INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"})
    req = cm.create_infer_request()
    req.set_input_tensor(ov.Tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2))))
    req.infer()
    return req, req.get_output_tensor().data.transpose(0, 2, 3, 1).copy()


def median_us(run, seconds):
    run()
    ts, t0 = [], time.perf_counter()
    while time.perf_counter() - t0 < seconds or len(ts) < 5:
        s = time.perf_counter()
        run()
        ts.append(time.perf_counter() - s)
    return sorted(ts)[len(ts) // 2] * 1e6


def convjit_bench(bin_, precision, seconds):
    """(sum of the layers, chained) of `convjit bench --total`, variant "jit"."""
    # One thread, as OpenVINO here (convjit's default is every core).
    out = convjit(bin_, "bench", CONV, "--json", "--total", "--no-interp", "--no-baselines",
                  "--rounds", "1", "--seconds", str(seconds), "--precision", precision,
                  "--threads", "1")
    total = next(json.loads(l) for l in out.splitlines() if '"total":true' in l)
    pick = lambda vs: next(v["median_us"] for v in vs if v["variant"] == "jit")
    return pick(total["results"]), pick(total["chained"])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--convjit", required=True, help="the convjit binary (cargo build --release)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.5, help="time per figure and round")
    ap.add_argument("--peers-dir", default=os.path.join(REPO, "..", "shared", "peers"))
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--json", default="", help="write the results here")
    a = ap.parse_args()
    sys.path.insert(0, a.peers_dir)
    from mobilenet_v2_body import build_onnx

    layers, arrays = network(a.convjit, a.seed)
    model = build_onnx(layers)
    x = np.random.default_rng(a.seed + 1).standard_normal((1, 224, 224, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as d:
        ours = convjit_outputs(a.convjit, d, layers, arrays, x)
    req32, ov32 = openvino(model, x, "f32")
    req16, ov16 = openvino(model, x, "bf16")
    scale = float(np.max(np.abs(ov32)))
    err = lambda u, v: float(np.max(np.abs(u - v))) / scale
    checks = {"convjit f32 vs OpenVINO f32": err(ours["f32"], ov32),
              "convjit bf16 vs OpenVINO f32": err(ours["bf16"], ov32),
              "OpenVINO bf16 vs OpenVINO f32": err(ov16, ov32),
              "convjit bf16 vs OpenVINO bf16": err(ours["bf16"], ov16)}
    for k, v in checks.items():
        print(f"{k}: largest error {v:.2e} of the largest output")
    if checks["convjit f32 vs OpenVINO f32"] > 1e-3:
        raise SystemExit("convjit and OpenVINO do not compute the same network")

    best = {}
    for r in range(a.rounds):
        figures = {"OpenVINO f32": median_us(req32.infer, a.seconds),
                   "OpenVINO bf16": median_us(req16.infer, a.seconds)}
        for p in ("f32", "bf16"):
            s, c = convjit_bench(a.convjit, p, a.seconds)
            figures[f"convjit {p} chained"] = c
            figures[f"convjit {p} sum"] = s
        for k, v in figures.items():
            best[k] = min(best.get(k, v), v)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.0f}" for k, v in figures.items()))
    print("best of rounds, us:")
    for k, v in best.items():
        print(f"  {k:22} {v:8.0f}")
    ratio = best["convjit bf16 chained"] / best["OpenVINO bf16"]
    print(f"convjit bf16 chained / OpenVINO bf16 = {ratio:.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"checks": checks, "best_us": best, "ratio_bf16_chained": ratio}, f, indent=1)


if __name__ == "__main__":
    main()
