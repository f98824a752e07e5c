#!/usr/bin/env python3
"""ONNX Runtime and OpenVINO, single-threaded, on the layers of benches/grouped.conv
(grouped convolutions) or, with `--set few_outputs`, of benches/few_outputs.conv
(convolutions to 1-4 output channels), each a one-node ONNX model (Conv with
`group`, bias, Relu).

    python benches/grouped_peers.py [--set grouped|few_outputs] [--rounds 3] [--json F]

Prints one line per layer and framework: median microseconds per call (the
lowest of --rounds medians, as bench_peers.py reports) and GFLOP/s; the
output is checked against a float64 numpy reference first (OpenVINO in bf16,
`openvino_bf16`, within bf16's bound: 2^-7 of the sum of the magnitudes multiplied
per output). Compare with `convjit bench benches/grouped.conv --no-interp
--rounds 3 [--precision bf16]` (or `benches/few_outputs.conv`) run right after.
"""
import argparse
import json
import os
import time

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import numpy as np  # noqa: E402

# name, H, W, Ci, Co, K, groups, pad (each side): the layers of benches/SET.conv.
SETS = {}
SETS["grouped"] = [
    ("shufflenet_gconv1x1_28x28x240_g3", 28, 28, 240, 240, 1, 3, 0),
    ("resnext_gconv3x3_56x56x128_g32", 56, 56, 128, 128, 3, 32, 1),
    ("alexnet_conv2_26x26x96_g2", 26, 26, 96, 256, 5, 2, 2),
    ("alexnet_conv4_12x12x384_g2", 12, 12, 384, 384, 3, 2, 1),
    ("alexnet_conv5_12x12x384_256_g2", 12, 12, 384, 256, 3, 2, 1),
]
SETS["few_outputs"] = [
    ("grey3x3_256x256", 256, 256, 1, 1, 3, 1, 1),
    ("grey7x7_256x256", 256, 256, 1, 1, 7, 1, 3),
    ("grey3x3_1080x1920", 1080, 1920, 1, 1, 3, 1, 1),
    ("rgb3x3_to1_256x256", 256, 256, 3, 1, 3, 1, 1),
    ("c64_3x3_to1_256x256", 256, 256, 64, 1, 3, 1, 1),
    ("c32_3x3_to1_128x128", 128, 128, 32, 1, 3, 1, 1),
    ("p64_to1_128x128", 128, 128, 64, 1, 1, 1, 0),
    ("c64_3x3_to3_256x256", 256, 256, 64, 3, 3, 1, 1),
    ("c32_9x9_to3_128x128", 128, 128, 32, 3, 9, 1, 4),
    ("c32_3x3_to4_128x128", 128, 128, 32, 4, 3, 1, 1),
    ("p64_to2_128x128", 128, 128, 64, 2, 1, 1, 0),
]


def model(h, w, ci, co, k, g, pad, rng):
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    W = rng.standard_normal((co, ci // g, k, k)).astype(np.float32) * 0.1
    B = rng.standard_normal(co).astype(np.float32) * 0.1
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[k, k],
                              pads=[pad] * 4, group=g),
             helper.make_node("Relu", ["c"], ["y"])]
    graph = helper.make_graph(
        nodes, "grouped", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, ci, h, w])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, co, h, w])],
        [numpy_helper.from_array(W, "W"), numpy_helper.from_array(B, "B")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    onnx.checker.check_model(m)
    return m, W, B


def reference(x, W, B, g, pad):
    """float64 grouped convolution, NCHW."""
    n, ci, h, w = x.shape
    co, cg, k, _ = W.shape
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((n, co, h, w))
    og = co // g
    for gi in range(g):
        xs = xp[:, gi * cg:(gi + 1) * cg]
        for ky in range(k):
            for kx in range(k):
                patch = xs[:, :, ky:ky + h, kx:kx + w]
                wt = W[gi * og:(gi + 1) * og, :, ky, kx].astype(np.float64)
                out[:, gi * og:(gi + 1) * og] += np.einsum("nchw,oc->nohw", patch, wt)
    return np.maximum(out + B[None, :, None, None], 0)


def timeit(run, rounds, target=0.5):
    run()
    best = None
    for _ in range(rounds):
        ts, t0 = [], time.perf_counter()
        while time.perf_counter() - t0 < target or len(ts) < 11:
            s = time.perf_counter()
            run()
            ts.append(time.perf_counter() - s)
        med = sorted(ts)[len(ts) // 2] * 1e6
        best = med if best is None else min(best, med)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--set", choices=sorted(SETS), default="grouped")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", default="")
    a = ap.parse_args()
    rng = np.random.default_rng(1)
    out = {}
    for name, h, w, ci, co, k, g, pad in SETS[a.set]:
        m, W, B = model(h, w, ci, co, k, g, pad, rng)
        x = rng.standard_normal((1, ci, h, w)).astype(np.float32)
        ref = reference(x, W, B, g, pad)
        macs = h * w * co * (ci // g) * k * k
        runs = {}
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
        runs["ort"] = (lambda s=s, x=x: s.run(None, {"x": x})[0])
        try:
            import openvino as ov
            core = ov.Core()
            for fw, precision in (("openvino", "f32"), ("openvino_bf16", "bf16")):
                cm = core.compile_model(core.read_model(m.SerializeToString(), b""), "CPU",
                                        {"INFERENCE_NUM_THREADS": 1, "NUM_STREAMS": 1,
                                         "INFERENCE_PRECISION_HINT": precision})
                req = cm.create_infer_request()
                req.set_input_tensor(ov.Tensor(x))
                runs[fw] = (lambda req=req: (req.infer(), req.get_output_tensor().data)[1])
        except ImportError:
            pass
        # bf16 rounds inputs and weights (2^-8 relative each): its bound is
        # the magnitudes summed, |x| * |W| per output, times 2^-7.
        magnitudes = reference(np.abs(x), np.abs(W), np.abs(B), g, pad)
        for fw, run in runs.items():
            err = np.abs(run() - ref)
            if fw.endswith("_bf16"):
                assert np.all(err <= 2.0 ** -7 * magnitudes + 1e-6), (fw, name, float(err.max()))
            else:
                err = float(np.max(err))
                assert err < 1e-3 * max(1.0, float(np.max(np.abs(ref)))), (fw, name, err)
            us = timeit(run, a.rounds)
            print(f"{name:36s} {fw:9s} {us:9.1f} us {2 * macs / us / 1e3:7.1f} GFLOP/s")
            out.setdefault(name, {})[fw] = round(us, 1)
    if a.json:
        json.dump(out, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
