#!/usr/bin/env python3
"""convjit against ONNX Runtime and OpenVINO (f32, one thread) on every distinct
convolution of the `onnx` wheel's light models (AlexNet, DenseNet-121, Inception
v1/v2, ResNet-50, ShuffleNet, SqueezeNet, VGG-19, ZFNet-512).

    python3 benches/real_models.py [--models vgg19,zfnet512] [--only SUBSTR]
                                   [--convjit PATH] [--rounds 3] [--seconds 0.5]
                                   [--keep DIR] [--json OUT.json] [--md OUT.md]

1. `convjit import MODEL.onnx -o TMP/MODEL.conv --weights TMP/MODEL.npz` for each
   model, into a temporary folder (never beside the model).
2. Every stage of every imported layer becomes a single-stage layer; stages equal
   in shape and options (input HxWxC, op, kernel, outputs, stride, dilation,
   padding, groups, multiplier, bias, activation) are timed once. A residual is
   dropped: alone, a stage has no layer input to add (the peers add none either).
   Names say the shape: `k3x3_14x14x512_512_same_relu` (kernel, input, outputs;
   `s2` a stride, `d2` a dilation, `g4` groups, `dw3x3` depthwise, `p1111` explicit
   padding top bottom left right, `nobias`); the table lists the models that have
   each. (222 layers for the nine models: bias and activation are part of the key.)
3. convjit: `convjit bench ALL.conv --json --no-interp --no-baselines --threads 1`
   (seeded random weights; a release build: --convjit, default
   $CARGO_TARGET_DIR/release/convjit or target/release/convjit). bench also times
   its other variants (two threads, bf16, avx2, cranelift): most of the run's time.
4. Peers: `/work/shared/peers/bench_peers.py --layers layers.json --fw
   ort,openvino --no-stages` (its output under the temporary folder) for the
   layers its convspec describes; grouped convolutions (AlexNet's groups 2,
   ShuffleNet's grouped 1x1), which convspec has no field for, by this script
   with the same runners' settings (one thread, ORT_ENABLE_ALL with IOBinding;
   OpenVINO f32, latency hint), checked against a float64 reference and timed
   with bench_peers' timeit.
   --rounds passes alternate 3 and 4, each a single round, all pinned to --cpu;
   each time is the lowest of its rounds' medians (as bench_peers reports).

Prints one line per layer (MACs, microseconds, each ratio convjit / peer: below
1 convjit is faster), then the geometric mean of the ratios and the worst ones.
--keep DIR keeps the .conv, layers.json and all outputs there.
"""
import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile

PEERS = "/work/shared/peers"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = ["bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
          "shufflenet", "squeezenet", "vgg19", "zfnet512"]
STAGE_RE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*:\s*(.+)$")


def model_dir():
    import onnx
    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def default_convjit():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target"))
    return os.path.join(target, "release", "convjit")


def run(cmd, **kw):
    r = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if r.returncode != 0:
        sys.exit(f"failed ({r.returncode}): {' '.join(cmd)}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def parse_options(text):
    """`conv 3x3 -> 64, stride 2, pad 1 1 1 1, bias, relu` -> dict."""
    parts = [p.strip() for p in text.split("#")[0].split(",")]
    op, opts = parts[0].split(), parts[1:]
    s = dict(stride=[1, 1], dilation=[1, 1], pad="valid", groups=1, multiplier=1, bias=False,
             act="none")
    if op[0] == "conv":
        kh, kw = op[1].split("x")
        s.update(op="conv", kernel=[int(kh), int(kw)], co=int(op[3]))
    elif op[0] == "pointwise":
        s.update(op="conv", kernel=[1, 1], co=int(op[1]))
    elif op[0] == "depthwise":
        kh, kw = op[1].split("x")
        s.update(op="depthwise", kernel=[int(kh), int(kw)])
    else:
        raise ValueError(f"unknown op in: {text}")

    def pair(v):
        a = v.split("x")
        return [int(a[0]), int(a[-1])]
    for o in opts:
        w = o.split()
        if w[0] in ("stride", "dilation"):
            s[w[0]] = pair(w[1])
        elif w[0] == "pad":
            s["pad"] = w[1] if len(w) == 2 else [int(x) for x in w[1:]]  # T B L R
        elif w[0] in ("groups", "multiplier"):
            s[w[0]] = int(w[1])
        elif w[0] == "bias":
            s["bias"] = True
        elif w[0] in ("relu", "relu6"):
            s["act"] = w[0]
        elif w[0] == "residual":
            pass
        elif w[0] == "separable":
            raise ValueError(f"separable stage not expected from import: {text}")
        else:
            raise ValueError(f"unknown option {w[0]!r} in: {text}")
    return s


def stage_inputs(convjit, conv):
    """{(layer, stage): (H, W, C)} from `convjit check`."""
    out, layer = {}, None
    for line in run([convjit, "check", conv]).splitlines():
        m = re.match(r"^layer (\S+):", line)
        if m:
            layer = m.group(1)
            continue
        m = re.match(r"^\s+(\S+)\s+(\d+)x(\d+)x(\d+)\s+->", line)
        if m:
            out[(layer, m.group(1))] = tuple(int(m.group(i)) for i in (2, 3, 4))
    return out


def conv_stages(conv):
    """[(layer, stage, options text)] of a .conv file."""
    out, layer = [], None
    for line in open(conv):
        line = line.split("#")[0].rstrip()
        m = re.match(r"^\s*layer\s+(\S+)\s*\{", line)
        if m:
            layer = m.group(1)
            continue
        for stmt in line.split(";"):
            m = STAGE_RE.match(stmt)
            if m and layer and not stmt.strip().startswith("input"):
                out.append((layer, m.group(1), m.group(2)))
    return out


def stage_key(hwc, s):
    pad = s["pad"] if isinstance(s["pad"], str) else tuple(s["pad"])
    return (hwc, s["op"], tuple(s["kernel"]), s.get("co"), tuple(s["stride"]),
            tuple(s["dilation"]), pad, s["groups"], s["multiplier"], s["bias"], s["act"])


def layer_name(hwc, s):
    h, w, c = hwc
    if s["op"] == "depthwise":
        kind = f"dw{s['kernel'][0]}x{s['kernel'][1]}"
        co = c * s["multiplier"]
    else:
        kind = f"k{s['kernel'][0]}x{s['kernel'][1]}"
        co = s["co"]
    name = f"{kind}_{h}x{w}x{c}_{co}"
    if s["stride"] != [1, 1]:
        name += f"_s{s['stride'][0]}" if s["stride"][0] == s["stride"][1] else \
            f"_s{s['stride'][0]}x{s['stride'][1]}"
    if s["dilation"] != [1, 1]:
        name += f"_d{s['dilation'][0]}"
    if s["groups"] > 1:
        name += f"_g{s['groups']}"
    if isinstance(s["pad"], list):
        t, b, l, r = s["pad"]
        if (t, b, l, r) != (0, 0, 0, 0):
            name += f"_p{t}{b}{l}{r}"
    elif s["pad"] == "same":
        name += "_same"
    if s["act"] != "none":
        name += "_" + s["act"]
    if not s["bias"]:
        name += "_nobias"
    return name


def conv_text(name, hwc, s):
    h, w, c = hwc
    if s["op"] == "depthwise":
        op = f"depthwise {s['kernel'][0]}x{s['kernel'][1]}"
    elif s["kernel"] == [1, 1] and s["stride"] == [1, 1] and s["pad"] in ("valid", [0, 0, 0, 0]) \
            and s["dilation"] == [1, 1]:
        op = f"pointwise {s['co']}"
    else:
        op = f"conv {s['kernel'][0]}x{s['kernel'][1]} -> {s['co']}"
    opts = []
    if s["stride"] != [1, 1]:
        opts.append(f"stride {s['stride'][0]}x{s['stride'][1]}")
    if s["dilation"] != [1, 1]:
        opts.append(f"dilation {s['dilation'][0]}x{s['dilation'][1]}")
    if s["op"] == "depthwise" or op.startswith("conv"):
        p = s["pad"]
        opts.append(f"pad {p}" if isinstance(p, str) else "pad " + " ".join(map(str, p)))
    if s["multiplier"] > 1:
        opts.append(f"multiplier {s['multiplier']}")
    if s["groups"] > 1:
        opts.append(f"groups {s['groups']}")
    if s["bias"]:
        opts.append("bias")
    if s["act"] != "none":
        opts.append(s["act"])
    return f"layer {name} {{\n  input {h}x{w}x{c}\n  s: {', '.join([op] + opts)}\n}}\n"


def spec(name, hwc, s):
    """convspec's layer dict (None for a grouped conv: convspec has no groups)."""
    if s["op"] == "conv" and s["groups"] > 1:
        return None
    h, w, c = hwc
    p = s["pad"]
    padding = p if isinstance(p, str) else [[p[0], p[1]], [p[2], p[3]]]
    if s["op"] == "depthwise":
        d = dict(kind="depthwise", depth_multiplier=s["multiplier"], C_out=c * s["multiplier"])
    elif s["kernel"] == [1, 1] and s["stride"] == [1, 1] and padding in ("valid", [[0, 0], [0, 0]]):
        d = dict(kind="pointwise", C_out=s["co"])
        padding = "valid"
    else:
        d = dict(kind="standard", C_out=s["co"])
    d.update(name=name, N=1, H=h, W=w, C_in=c, kernel=s["kernel"], stride=s["stride"],
             dilation=s["dilation"], padding=padding, bias=s["bias"], activation=s["act"])
    return d


def collect(convjit, tmp, models):
    """{key: dict(name, hwc, s, models, macs)} over the models' stages."""
    layers = {}
    for m in models:
        path = os.path.join(model_dir(), f"light_{m}.onnx")
        conv = os.path.join(tmp, f"{m}.conv")
        run([convjit, "import", path, "-o", conv, "--weights", os.path.join(tmp, f"{m}.npz")])
        shapes = stage_inputs(convjit, conv)
        for layer, stage, text in conv_stages(conv):
            s = parse_options(text)
            hwc = shapes[(layer, stage)]
            k = stage_key(hwc, s)
            if k not in layers:
                layers[k] = dict(name=layer_name(hwc, s), hwc=hwc, s=s, models=[])
            if m not in layers[k]["models"]:
                layers[k]["models"].append(m)
    out = list(layers.values())
    names = {}
    for L in out:  # distinct names (options not in the name, e.g. dilation pairs)
        n = names.get(L["name"], 0)
        names[L["name"]] = n + 1
        if n:
            L["name"] += f"_v{n}"
    return out


def grouped_peers(layers, fws, rounds, target):
    """{name: {fw: us}} for grouped convolutions, bench_peers' settings and timer."""
    sys.path.insert(0, PEERS)
    import numpy as np
    import bench_peers as bp
    import convspec as cs
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    out, jobs = {}, []
    for L in layers:
        (h, w, c), s = L["hwc"], L["s"]
        g, co = s["groups"], s["co"]
        kh, kw = s["kernel"]
        p = s["pad"]
        if isinstance(p, list):
            pads = [[p[0], p[1]], [p[2], p[3]]]
        else:
            pads = [list(cs.resolve_pad((h, w)[a], s["kernel"][a], s["stride"][a],
                                        s["dilation"][a], p, a)[1:]) for a in (0, 1)]
        rng = np.random.default_rng(cs.seed_for(L["name"]))
        x = rng.uniform(-1, 1, size=(1, h, w, c)).astype(np.float32)
        fan = kh * kw * (c // g)
        wt = (rng.uniform(-1, 1, size=(kh, kw, c // g, co)) * (1.7 / math.sqrt(fan))).astype(np.float32)
        b = rng.uniform(-0.5, 0.5, size=co).astype(np.float32) if s["bias"] else None
        # float64 reference: each group a convspec stage on its channels.
        og, refs = co // g, []
        for gi in range(g):
            st = cs.layer_stages(dict(name="g", kind="standard", H=h, W=w, C_in=c // g, C_out=og,
                                      kernel=s["kernel"], stride=s["stride"],
                                      dilation=s["dilation"], padding=pads,
                                      bias=b is not None, activation=s["act"]))[0]
            refs.append(cs.ref_stage(x[..., gi * (c // g):(gi + 1) * (c // g)], st,
                                     wt[..., gi * og:(gi + 1) * og],
                                     None if b is None else b[gi * og:(gi + 1) * og]))
        ref = np.concatenate(refs, axis=3)
        ho, wo = ref.shape[1], ref.shape[2]
        inits = [numpy_helper.from_array(np.ascontiguousarray(wt.transpose(3, 2, 0, 1)), "W")]
        ins = ["x", "W"]
        if b is not None:
            inits.append(numpy_helper.from_array(b, "B"))
            ins.append("B")
        nodes = [helper.make_node("Conv", ins, ["c"], kernel_shape=[kh, kw], strides=s["stride"],
                                  dilations=s["dilation"],
                                  pads=[pads[0][0], pads[1][0], pads[0][1], pads[1][1]], group=g)]
        cur = "c"
        if s["act"] == "relu":
            nodes.append(helper.make_node("Relu", [cur], ["a"]))
            cur = "a"
        elif s["act"] == "relu6":
            inits += [numpy_helper.from_array(np.array(0, np.float32), "lo"),
                      numpy_helper.from_array(np.array(6, np.float32), "hi")]
            nodes.append(helper.make_node("Clip", [cur, "lo", "hi"], ["a"]))
            cur = "a"
        nodes.append(helper.make_node("Identity", [cur], ["y"]))
        graph = helper.make_graph(
            nodes, "grouped", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, w])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, ho, wo])], inits)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        onnx.checker.check_model(model)
        xn = np.ascontiguousarray(x.transpose(0, 3, 1, 2))
        for fw in fws:
            if fw == "ort":
                import onnxruntime as ort
                so = ort.SessionOptions()
                so.intra_op_num_threads = so.inter_op_num_threads = 1
                so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
                so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                so.log_severity_level = 3
                sess = ort.InferenceSession(model.SerializeToString(), so,
                                            providers=["CPUExecutionProvider"])
                xo = ort.OrtValue.ortvalue_from_numpy(xn)
                yo = ort.OrtValue.ortvalue_from_shape_and_type([1, co, ho, wo], np.float32)
                bind = sess.io_binding()
                bind.bind_ortvalue_input("x", xo)
                bind.bind_ortvalue_output("y", yo)
                fn = (lambda sess=sess, bind=bind: sess.run_with_iobinding(bind))
                fetch = (lambda yo=yo: yo.numpy())
            else:
                import openvino as ov
                core = ov.Core()
                cm = core.compile_model(core.read_model(model.SerializeToString(), b""), "CPU",
                                        {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                         "INFERENCE_PRECISION_HINT": "f32",
                                         "PERFORMANCE_HINT": "LATENCY",
                                         "ENABLE_HYPER_THREADING": False})
                req = cm.create_infer_request()
                req.set_input_tensor(ov.Tensor(xn))
                fn = (lambda req=req: req.infer())
                fetch = (lambda req=req: req.get_output_tensor().data)
            fn()
            err = float(np.abs(fetch().transpose(0, 2, 3, 1).astype(np.float64) - ref).max())
            assert err < 1e-3 * max(1.0, float(np.abs(ref).max())), (fw, L["name"], err)
            jobs.append((L["name"], fw, fn))
    for _ in range(rounds):
        for name, fw, fn in jobs:
            us = bp.timeit(fn, target)["us_median"]
            d = out.setdefault(name, {})
            d[fw] = min(us, d.get(fw, us))
    return out


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default=",".join(MODELS),
                    help="comma list (substrings) of: " + ", ".join(MODELS))
    ap.add_argument("--only", default=None,
                    help="comma list of substrings of layer names (e.g. 14x14x512,g3)")
    ap.add_argument("--convjit", default=default_convjit())
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.5, help="timing budget per variant")
    ap.add_argument("--fw", default="ort,openvino")
    ap.add_argument("--no-peers", action="store_true", help="time convjit only")
    ap.add_argument("--peers-json", default=None,
                    help="reuse a previous run's --json peer times instead of timing the peers")
    ap.add_argument("--cpu", type=int, default=1,
                    help="pin convjit and the peers to this CPU (-1: no pinning)")
    ap.add_argument("--winograd", action="store_true",
                    help="convjit bench --winograd: 3x3 stride-1 layers where it pays (>= 16 "
                         "channels a side, >= 2M MACs) run as F(2x2, 3x3); the direct kernel is timed in the same runs (its geomean "
                         "printed too)")
    ap.add_argument("--keep", default=None, help="keep the files in this folder")
    ap.add_argument("--json", default=None, help="write every time and ratio here")
    ap.add_argument("--md", default=None, help="write the table as Markdown here")
    a = ap.parse_args()
    if not os.path.exists(a.convjit):
        sys.exit(f"{a.convjit}: no convjit binary (cargo build --release, or --convjit)")
    want = [m for m in MODELS if any(w in m for w in a.models.split(","))]
    fws = a.fw.split(",")
    tmpctx = None
    if a.keep:
        tmp = a.keep
        os.makedirs(tmp, exist_ok=True)
    else:
        tmpctx = tempfile.TemporaryDirectory(prefix="real_models_")
        tmp = tmpctx.name
    print(f"uptime: {open('/proc/loadavg').read().split()[:3]}", flush=True)
    layers = collect(a.convjit, tmp, want)
    if a.only:
        layers = [L for L in layers if any(o in L["name"] for o in a.only.split(","))]
    if not layers:
        sys.exit("no layer selected")
    ids = {}
    print(f"{len(layers)} distinct layers of {', '.join(want)}", flush=True)
    conv = os.path.join(tmp, "real_models.conv")
    with open(conv, "w") as f:
        for L in layers:
            f.write(conv_text(L["name"], L["hwc"], L["s"]))
            ids[L["name"]] = L
    # Rounds interleave convjit and the peers, each round a whole pass of each
    # (its best round median kept): load from other tenants of the machine
    # then weighs on both alike. Both pinned to the same CPU.
    specs = [sp for sp in (spec(L["name"], L["hwc"], L["s"]) for L in layers) if sp]
    grouped = [L for L in layers if spec(L["name"], L["hwc"], L["s"]) is None]
    peer = {}
    if a.peers_json:
        for L in json.load(open(a.peers_json))["layers"]:
            peer[L["name"]] = {fw: L.get(fw) for fw in fws if L.get(fw)}
    pin = ["taskset", "-c", str(a.cpu)] if a.cpu >= 0 else []

    def keep(name, fw, us):
        d = peer.setdefault(name, {})
        d[fw] = min(us, d.get(fw, us))
    for rnd in range(a.rounds):
        lines = run(pin + [a.convjit, "bench", conv, "--json", "--no-interp", "--no-baselines",
                           "--threads", "1", "--seconds", str(a.seconds)]
                    + (["--winograd"] if a.winograd else []))
        for line in lines.splitlines():
            r = json.loads(line) if line.startswith("{") else {}
            if "layer" not in r:
                continue
            L = ids[r["layer"]]
            L["macs"] = r["macs"]
            for v in r["results"]:
                if v["variant"] == "jit" and v["median_us"] <= L.get("convjit", math.inf):
                    L["convjit"] = v["median_us"]
                    L["pct_peak"] = v.get("pct_widest_measured_peak")
            # The direct kernel: `jit` itself where Winograd does not run.
            direct = [v["median_us"] for v in r["results"] if v["variant"] == "jit-direct"]
            direct = direct or [v["median_us"] for v in r["results"] if v["variant"] == "jit"]
            L["direct"] = min(direct + [L.get("direct", math.inf)])
        if a.peers_json or a.no_peers:
            continue
        if specs:
            lj = os.path.join(tmp, "layers.json")
            json.dump(dict(layers=specs), open(lj, "w"), indent=1)
            pj, pm = os.path.join(tmp, f"peers{rnd}.json"), os.path.join(tmp, f"peers{rnd}.md")
            run([sys.executable, os.path.join(PEERS, "bench_peers.py"), "--layers", lj, "--fw",
                 a.fw, "--rounds", "1", "--target", str(a.seconds), "--no-stages",
                 "--cpu", str(a.cpu), "--out-json", pj, "--out-md", pm])
            for e in json.load(open(pj))["layers"]:
                for fw in fws:
                    r = e["results"].get(fw, {}).get("full", {})
                    if "us_median" in r:
                        keep(e["name"], fw, r["us_median"])
        if grouped:
            if a.cpu >= 0:
                os.sched_setaffinity(0, {a.cpu})
            for name, d in grouped_peers(grouped, fws, 1, a.seconds).items():
                for fw, us in d.items():
                    keep(name, fw, us)
        print(f"round {rnd + 1} of {a.rounds} done, load {open('/proc/loadavg').read().split()[:3]}",
              flush=True)
    # Table.
    short = {"ort": "ORT", "openvino": "OpenVINO"}
    head = f"{'layer':44s} {'MACs':>13s} {'convjit':>9s} {'%peak':>6s}"
    for fw in fws:
        head += f" {short.get(fw, fw):>9s} {'ratio':>6s}"
    print(head + "  models")
    ratios = {fw: [] for fw in fws}
    worst = []
    for L in layers:
        p = peer.get(L["name"], {})
        L["peers"] = p
        t = L.get("convjit")
        row = f"{L['name']:44s} {L.get('macs', 0):13,d} {t or float('nan'):9.1f} " \
              f"{L.get('pct_peak') or float('nan'):6.1f}"
        for fw in fws:
            us = p.get(fw)
            r = t / us if (t and us) else None
            if r:
                ratios[fw].append(r)
                worst.append((r, fw, L["name"]))
            row += f" {us or float('nan'):9.1f} {r or float('nan'):6.2f}"
        print(row + "  " + ",".join(L["models"]), flush=True)
    summary = {}
    for fw in fws:
        rs = ratios[fw]
        if rs:
            summary[fw] = dict(geomean=geomean(rs), behind=sum(r > 1 for r in rs),
                               worst=max(rs), n=len(rs))
            print(f"{short.get(fw, fw)}: geomean {summary[fw]['geomean']:.3f}, behind on "
                  f"{summary[fw]['behind']} of {len(rs)}, worst {max(rs):.2f}")
            # Each layer at the widest FMA peak measured in its rounds, where that is
            # faster: about the floor of code with one FMA per MAC (MACs are nominal:
            # a layer whose padding taps are skipped can go a little below its term).
            floor = [min(L["convjit"], L["convjit"] * L["pct_peak"] / 100) / L["peers"][fw]
                     for L in layers if L.get("convjit") and L.get("pct_peak")
                     and L["peers"].get(fw)]
            if floor:
                summary[fw]["floor"] = geomean(floor)
                print(f"{short.get(fw, fw)}: with every layer at the measured FMA peak, geomean "
                      f"{summary[fw]['floor']:.3f} (about direct f32 code's floor; nominal MACs)")
        direct = [L["direct"] / peer[L["name"]][fw] for L in layers
                  if L.get("direct") and peer.get(L["name"], {}).get(fw)]
        if a.winograd and direct:
            print(f"{short.get(fw, fw)} with the direct kernels (same runs): geomean "
                  f"{geomean(direct):.3f}, behind on {sum(r > 1 for r in direct)} of {len(direct)}, "
                  f"worst {max(direct):.2f}")
    worst.sort(reverse=True)
    print("worst ratios:")
    for r, fw, name in worst[:12]:
        print(f"  {r:5.2f} {short.get(fw, fw):9s} {name}")
    print(f"uptime: {open('/proc/loadavg').read().split()[:3]}")
    if a.json:
        json.dump(dict(summary=summary, layers=[
            dict(name=L["name"], models=L["models"], macs=L.get("macs"), convjit=L.get("convjit"),
                 pct_peak=L.get("pct_peak"), **L["peers"]) for L in layers]),
            open(a.json, "w"), indent=1)
    if a.md:
        with open(a.md, "w") as f:
            f.write("| layer | models | MACs | convjit us | " +
                    " | ".join(f"{short.get(fw, fw)} us | / {short.get(fw, fw)}" for fw in fws) +
                    " |\n|---|---|---|---|" + "---|---|" * len(fws) + "\n")
            for L in layers:
                t, p = L.get("convjit"), L["peers"]
                cells = []
                for fw in fws:
                    us = p.get(fw)
                    cells += [f"{us:.1f}" if us else "-", f"{t / us:.2f}" if t and us else "-"]
                f.write(f"| {L['name']} | {','.join(L['models'])} | {L.get('macs', 0):,} | "
                        f"{t:.1f} | " + " | ".join(cells) + " |\n")
    if tmpctx:
        tmpctx.cleanup()


if __name__ == "__main__":
    main()
