#!/usr/bin/env python3
"""MobileNet v2's convolutional body (224x224x3 -> 7x7x1280) in convjit and in the peers, on one
thread and on two, in one session:

    cargo build --release
    /tmp/peersenv/bin/python benches/mobilenet_v2_peers.py --convjit target/release/convjit \\
        --rounds 3 --json /tmp/mnv2_peers.json      # about 10 minutes on 2 cores
    python3 benches/report.py --mnv2 /tmp/mnv2_peers.json   # the BENCHMARKS.md section

It imports the shared script (`../shared/peers/mobilenet_v2_body.py`, `--peers-dir`): Keras'
own MobileNetV2 with seeded random weights and BatchNorm statistics, BatchNorm folded, the ONNX
graph of the folded layers. Then:

1. `examples/mobilenet_v2.conv` must be that network: `convjit check` of it and of the file the
   shared script writes agree line for line, layer names aside. It runs layer by layer
   (`convjit run`, each layer on the previous one's output, the Keras weights) and its output is
   compared with Keras'.
2. The whole body is timed in TFLite+XNNPACK and LiteRT+XNNPACK (the flatbuffer converted from
   the Keras model), ONNX Runtime and OpenVINO (the ONNX graph, f32), at 1 and 2 threads, each
   checked against Keras.
3. `convjit bench examples/mobilenet_v2.conv --json --total --threads 1`: per layer the planned
   kernel on one thread (`jit`) and on 2 (`jit-2threads`; `--threads 2` where the host has other
   than 2 cores),
   and the layers chained as a network runs them.
4. Unless `--no-per-layer`: each layer alone in each peer (a one-layer Keras model -> TFLite;
   a one-layer ONNX graph), fed convjit's input to that layer and checked against convjit's
   output for it: where convjit is behind the best peer, layer by layer.

Every round times every framework (whole body, convjit, per layer) in turn, so load from other
tenants falls on all; each figure is its best round, as the shared script reports (the rounds'
spread is in the JSON). convjit's per-layer times come from `convjit bench` (a layer alone,
back to back: its weights stay in the caches); the peers' whole-body times and convjit's
`chained` time run the layers one after another, which is the like-for-like comparison;
the sum over the layers is what issue 10's target names.
"""
import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONV = os.path.join(REPO, "examples", "mobilenet_v2.conv")
FWS = ("TFLite+XNNPACK", "LiteRT+XNNPACK", "ONNX Runtime", "OpenVINO")
THREADS = (1, 2)


def now():
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def convjit(bin_, *args):
    p = subprocess.run([bin_, *args], capture_output=True, text=True, cwd=REPO)
    if p.returncode != 0:
        raise SystemExit(f"convjit {' '.join(args)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return p.stdout


def our_layers(bin_):
    """Layer names of examples/mobilenet_v2.conv, in order, and `convjit check`'s lines."""
    text = convjit(bin_, "check", CONV)
    names = [l.split(":")[0].split()[1] for l in text.splitlines() if l.startswith("layer ")]
    return names, text


def strip_names(check_text):
    return [l.split(":", 1)[1] if l.startswith("layer ") else l for l in check_text.splitlines()]


# ---------------------------------------------------------------- peers


def tflite_bytes(model):
    import tensorflow as tf
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    with contextlib.redirect_stdout(io.StringIO()):
        return conv.convert()


def peer_runners(flat, onnx_model, x, threads):
    """{framework: (run, fetch)} for a TFLite flatbuffer and an ONNX graph of the same network,
    on `threads` threads; fetch gives NHWC."""
    import tensorflow as tf
    out = {}
    interpreters = {"TFLite+XNNPACK": tf.lite.Interpreter}
    try:
        from ai_edge_litert.interpreter import Interpreter
        interpreters["LiteRT+XNNPACK"] = Interpreter
    except ImportError:
        pass
    for name, cls in interpreters.items():
        it = cls(model_content=flat, num_threads=threads)
        it.allocate_tensors()
        it.set_tensor(it.get_input_details()[0]["index"], x)
        o = it.get_output_details()[0]["index"]
        out[name] = (it.invoke, lambda it=it, o=o: it.get_tensor(o).copy())
    xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    s = ort.InferenceSession(onnx_model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    dims = [d.dim_value for d in onnx_model.graph.output[0].type.tensor_type.shape.dim]
    xo = ort.OrtValue.ortvalue_from_numpy(xn)
    yo = ort.OrtValue.ortvalue_from_shape_and_type(dims, np.float32)
    b = s.io_binding()
    b.bind_ortvalue_input("x", xo)
    b.bind_ortvalue_output("y", yo)
    out["ONNX Runtime"] = (lambda s=s, b=b: s.run_with_iobinding(b),
                           lambda yo=yo: yo.numpy().transpose(0, 2, 3, 1).copy())
    try:
        import openvino as ov
        core = ov.Core()
        cm = core.compile_model(core.read_model(onnx_model.SerializeToString(), b""), "CPU",
                                {"INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1,
                                 "INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY",
                                 "ENABLE_HYPER_THREADING": False})
        req = cm.create_infer_request()
        req.set_input_tensor(ov.Tensor(xn))
        out["OpenVINO"] = (req.infer,
                           lambda req=req: req.get_output_tensor().data.transpose(0, 2, 3, 1).copy())
    except ImportError:
        pass
    return out


def one_layer_onnx(body, L):
    """The shared script's ONNX graph of one folded layer (its input declared at the layer's
    shape: the shared builder declares the network's)."""
    import onnx
    m = body.build_onnx([L])
    dims = m.graph.input[0].type.tensor_type.shape.dim
    for d, v in zip(dims, (1, L["C"], L["H"], L["W"])):
        d.dim_value = v
    onnx.checker.check_model(m)
    return m


def one_layer_keras(L):
    """A Keras model of one folded layer: what the converter gives TFLite for that block."""
    import keras
    inp = keras.Input((L["H"], L["W"], L["C"]), batch_size=1)
    x = inp
    for st in L["stages"]:
        pad = "same"
        if st["pads"] != "same":
            (t, b), (l, r) = st["pads"]
            if t or b or l or r:
                x = keras.layers.ZeroPadding2D(((t, b), (l, r)))(x)
            pad = "valid"
        if st["op"] == "dwconv":
            lay = keras.layers.DepthwiseConv2D(tuple(st["kernel"]), strides=tuple(st["stride"]), padding=pad,
                                               depth_multiplier=st["w"].shape[3])
        else:
            lay = keras.layers.Conv2D(st["C_out"], tuple(st["kernel"]), strides=tuple(st["stride"]),
                                      padding=pad)
        x = lay(x)
        lay.set_weights([st["w"].astype(np.float32), st["b"].astype(np.float32)])
        if st["act"] == "relu6":
            x = keras.layers.ReLU(6.0)(x)
    if L["residual"]:
        x = keras.layers.Add()([x, inp])
    return keras.Model(inp, x)


# ---------------------------------------------------------------- convjit


def bench_convjit(bin_, seconds):
    """One `convjit bench --json --total` of the network: ({layer: {threads: us}},
    {"sum": {threads: us}, "chained": {threads: us}}, backend)."""
    def run(extra):
        lines = convjit(bin_, "bench", CONV, "--json", "--total", "--no-interp", "--no-baselines",
                        "--rounds", "1", "--seconds", str(seconds), *extra).splitlines()
        recs = [json.loads(l) for l in lines if l.startswith("{")]
        return [r for r in recs if "layer" in r], next(r for r in recs if r.get("total"))

    def us(results, name):
        return next((v["median_us"] for v in results if v["variant"] == name), None)

    # "jit" on one thread, "jit-{cores}threads" beside it (by default "jit" uses every core).
    layers, total = run(["--threads", "1"])
    per = {r["layer"]: {1: us(r["results"], "jit"), 2: us(r["results"], "jit-2threads")} for r in layers}
    tot = {"sum": {1: us(total["results"], "jit"), 2: us(total["results"], "jit-2threads")},
           "chained": {1: us(total.get("chained", []), "jit"),
                       2: us(total.get("chained", []), "jit-2threads")}}
    if tot["sum"][2] is None:  # a host of other than 2 cores: its all-core variant is not 2 threads
        layers2, total2 = run(["--threads", "2"])
        for r in layers2:
            per[r["layer"]][2] = us(r["results"], "jit")
        tot["sum"][2] = us(total2["results"], "jit")
        tot["chained"][2] = us(total2.get("chained", []), "jit")
    return per, tot, layers[0].get("backend")


# ---------------------------------------------------------------- main


def best(xs):
    xs = [x for x in xs if x is not None]
    return min(xs) if xs else None


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--convjit", required=True, help="the convjit binary (cargo build --release)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.5,
                    help="time per figure per round (per layer in the peers: half of it)")
    ap.add_argument("--json", default="", help="write the results here")
    ap.add_argument("--out", default="/tmp/mnv2_peers", help="the shared script's files (weights, outputs)")
    ap.add_argument("--peers-dir", default=os.path.join(REPO, "..", "shared", "peers"))
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--no-per-layer", action="store_true", help="skip the peers' per-layer times")
    a = ap.parse_args()
    bin_ = os.path.abspath(a.convjit)
    sys.path.insert(0, os.path.abspath(a.peers_dir))
    import mobilenet_v2_body as body

    started, load0 = now(), os.getloadavg()
    os.makedirs(a.out, exist_ok=True)
    model = body.build_keras(a.seed)
    layers = body.fold(model)
    shared_conv = os.path.join(a.out, "mobilenet_v2_body.conv")
    open(shared_conv, "w").write(body.conv_text(layers))
    body.write_weights(layers, a.out)
    x = np.random.default_rng(a.seed).uniform(-1, 1, (1, 224, 224, 3)).astype(np.float32)
    ref = np.asarray(model(x, training=False))
    tol = 1e-3 * max(1.0, float(np.max(np.abs(ref))))

    # 1. Our file is Keras' network; run it with Keras' weights.
    names, ours_check = our_layers(bin_)
    same = strip_names(ours_check) == strip_names(convjit(bin_, "check", shared_conv))
    if not same or len(names) != len(layers):
        raise SystemExit(f"{CONV} is not the network {shared_conv} describes (convjit check differs)")
    cur, inputs = os.path.join(a.out, "input.npy"), []
    np.save(cur, x)
    for ours, L in zip(names, layers):
        inputs.append(cur)
        out = os.path.join(a.out, f"convjit_{ours}.npy")
        convjit(bin_, "run", CONV, "--layer", ours, "--input", cur, "--weights",
                os.path.join(a.out, L["name"] + ".npz"), "--output", out)
        cur = out
    outputs = inputs[1:] + [cur]
    cj_err = float(np.max(np.abs(np.load(cur) - ref)))
    print(f"{len(names)} layers, the same network as Keras'; convjit max |err| vs Keras {cj_err:.3g} "
          f"(tolerance {tol:.3g})", flush=True)

    # 2. The whole body in the peers.
    flat = tflite_bytes(model)
    onnx_model = body.build_onnx(layers)
    whole = {t: peer_runners(flat, onnx_model, x, t) for t in THREADS}
    errs = {}
    for t in THREADS:
        for fw, (run, fetch) in whole[t].items():
            run()
            errs[f"{fw} {t}t"] = float(np.max(np.abs(fetch() - ref)))
    # 4. Each layer alone in the peers, on convjit's input to it.
    single = []
    if not a.no_per_layer:
        for ours, L, i, o in zip(names, layers, inputs, outputs):
            xi, want = np.load(i), np.load(o)
            runners = {t: peer_runners(tflite_bytes(one_layer_keras(L)), one_layer_onnx(body, L), xi, t)
                       for t in THREADS}
            lerr = {}
            for fw, (run, fetch) in runners[1].items():
                run()
                lerr[fw] = float(np.max(np.abs(fetch() - want)))
            single.append((ours, L, runners, lerr, 1e-3 * max(1.0, float(np.max(np.abs(want))))))
        print(f"per-layer peer models built and checked against convjit's outputs", flush=True)

    body_us = {t: {fw: [] for fw in whole[t]} for t in THREADS}
    cj_rounds, cj_layers, backend = [], [], None
    layer_us = [{t: {fw: [] for fw in s[2][t]} for t in THREADS} for s in single]
    for r in range(a.rounds):
        for t in THREADS:
            for fw, (run, _) in whole[t].items():
                body_us[t][fw].append(body.timeit(run, 1, a.seconds))
        per, tot, backend = bench_convjit(bin_, a.seconds)
        cj_rounds.append(tot)
        cj_layers.append(per)
        for k, s in enumerate(single):
            for t in THREADS:
                for fw, (run, _) in s[2][t].items():
                    layer_us[k][t][fw].append(body.timeit(run, 1, a.seconds / 2))
        line = "; ".join(f"{t}t " + ", ".join(f"{fw} {v[-1]:.0f}" for fw, v in body_us[t].items())
                         + f", convjit sum {tot['sum'][t]:.0f} chained {tot['chained'][t]:.0f}"
                         for t in THREADS)
        print(f"round {r + 1}/{a.rounds} (us): {line}", flush=True)

    report = {
        "session": {"start": started, "end": now(), "cpu": cpu_model(), "cores": os.cpu_count(),
                    "load_before": [round(v, 2) for v in load0],
                    "load_after": [round(v, 2) for v in os.getloadavg()]},
        "rounds": a.rounds, "seconds": a.seconds, "seed": a.seed, "conv": "examples/mobilenet_v2.conv",
        "keras": {"max_abs_out": float(np.max(np.abs(ref))), "tolerance": tol},
        "convjit": {"backend": backend, "max_err_vs_keras": cj_err, "correct": cj_err <= tol,
                    "same_network_as_keras": same},
        "body": {}, "per_layer": [],
    }
    for t in THREADS:
        report["body"][str(t)] = {
            "peers_us": {fw: best(v) for fw, v in body_us[t].items()},
            "peers_rounds_us": body_us[t],
            "peers_max_err": {fw: errs[f"{fw} {t}t"] for fw in body_us[t]},
            "convjit_sum_us": best(c["sum"][t] for c in cj_rounds),
            "convjit_sum_of_best_layers_us": round(sum(best(p[n][t] for p in cj_layers) for n in names), 2),
            "convjit_chained_us": best(c["chained"][t] for c in cj_rounds),
            "convjit_rounds": [{"sum_us": c["sum"][t], "chained_us": c["chained"][t]} for c in cj_rounds],
        }
    for k, (ours, L, runners, lerr, ltol) in enumerate(single):
        report["per_layer"].append({
            "layer": ours, "keras_block": L["name"],
            "convjit_us": {str(t): best(p[ours][t] for p in cj_layers) for t in THREADS},
            "peers_us": {str(t): {fw: best(v) for fw, v in layer_us[k][t].items()} for t in THREADS},
            "peers_max_err_vs_convjit": lerr, "tolerance": ltol,
        })
    if not single:
        report["per_layer"] = [{"layer": n, "keras_block": L["name"],
                                "convjit_us": {str(t): best(p[n][t] for p in cj_layers) for t in THREADS}}
                               for n, L in zip(names, layers)]
    plan = [json.loads(l) for l in convjit(bin_, "plan", CONV, "--json").splitlines() if l.startswith("{")]
    for row, p in zip(report["per_layer"], plan):
        row["macs"] = p["macs"]

    for t in THREADS:
        b = report["body"][str(t)]
        print(f"\n{t} thread{'s' if t > 1 else ''}:")
        for fw, us in b["peers_us"].items():
            flag = "" if b["peers_max_err"][fw] <= tol else "  (DISAGREES with Keras)"
            print(f"  {fw:16s} {us:9.1f} us   max |err| vs Keras {b['peers_max_err'][fw]:.3g}{flag}")
        for key, label in (("convjit_sum_us", "convjit (sum)"), ("convjit_chained_us", "convjit chained")):
            fw, us = min(b["peers_us"].items(), key=lambda kv: kv[1])
            print(f"  {label:16s} {b[key]:9.1f} us   best peer {fw} / convjit: {us / b[key]:.2f}x")
    if a.json:
        json.dump(report, open(a.json, "w"), indent=1)
        print(f"\nwritten to {a.json}")


def cpu_model():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    main()
