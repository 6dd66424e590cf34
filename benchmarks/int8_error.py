"""Where does dynamic int8's error come from? Fidelity of int8 activation schemes on held-out training histories.

python benchmarks/int8_error.py EXPORT_DIR [--alpha 0.8] [--users 256] [--threads 1]

SmoothQuant (α) is folded into the export's model once, calibrated on `--users` training histories; the table scores
`--users` other users' training histories (never valid/test targets) and compares each int8 variant with torch fp32:
- per-tensor, s8 weights: what `--int8-scheme smooth` ships (ONNX Runtime dynamic int8, one activation scale per
  tensor);
- per-tensor, s8 weights, reduce_range: 7-bit weights, ONNX Runtime's remedy for U8S8 saturation on AVX2 (no VNNI);
- per-tensor, u8 weights: U8U8, which cannot saturate;
- per-token, u8 / s8 activations: one activation scale per token (`per_token_int8` below: Abs, ReduceMax, Round, Cast,
  MatMulInteger, rescale), int8 weights per output channel.
Prints top-10 overlap, relative L2 error of the scores and the seconds to score the held-out users.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch


def per_token_int8(src: Path, dst: Path, exclude: list[str], activations: str = "u8") -> None:
    """Every weight MatMul not in `exclude` → symmetric int8 weights per output channel and activations quantized with
    one scale per token (row of the last axis) at run time: u8 with zero point 128, or s8."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(src))
    g = model.graph
    inits = {i.name: i for i in g.initializer}

    def const(name, value):
        g.initializer.append(numpy_helper.from_array(np.asarray(value), name))

    lo, hi = (0.0, 255.0) if activations == "u8" else (-127.0, 127.0)
    for name, value in (("pt/127", np.float32(127)), ("pt/eps", np.float32(1e-8)), ("pt/128", np.float32(128)),
                        ("pt/axes", np.array([-1], np.int64)), ("pt/zp", np.uint8(128)), ("pt/lo", np.float32(lo)),
                        ("pt/hi", np.float32(hi))):
        const(name, value)
    nodes = []
    for n in g.node:
        if n.op_type != "MatMul" or n.name in exclude or n.input[1] not in inits:
            nodes.append(n)
            continue
        w = numpy_helper.to_array(inits[n.input[1]]).astype(np.float32)
        w_scale = np.abs(w).max(0) / 127
        w_scale[w_scale == 0] = 1.0
        p, x = n.name, n.input[0]
        const(p + "/wq", np.clip(np.round(w / w_scale), -127, 127).astype(np.int8))
        const(p + "/ws", w_scale.astype(np.float32))
        mk = helper.make_node
        nodes += [mk("Abs", [x], [p + "/abs"]), mk("ReduceMax", [p + "/abs", "pt/axes"], [p + "/max"], keepdims=1),
                  mk("Max", [p + "/max", "pt/eps"], [p + "/max2"]), mk("Div", [p + "/max2", "pt/127"], [p + "/s"]),
                  mk("Div", [x, p + "/s"], [p + "/xs"]), mk("Round", [p + "/xs"], [p + "/xr"])]
        if activations == "u8":
            nodes += [mk("Add", [p + "/xr", "pt/128"], [p + "/xa"]),
                      mk("Clip", [p + "/xa", "pt/lo", "pt/hi"], [p + "/xc"]),
                      mk("Cast", [p + "/xc"], [p + "/xq"], to=TensorProto.UINT8),
                      mk("MatMulInteger", [p + "/xq", p + "/wq", "pt/zp"], [p + "/acc"])]
        else:
            nodes += [mk("Clip", [p + "/xr", "pt/lo", "pt/hi"], [p + "/xc"]),
                      mk("Cast", [p + "/xc"], [p + "/xq"], to=TensorProto.INT8),
                      mk("MatMulInteger", [p + "/xq", p + "/wq"], [p + "/acc"])]
        nodes += [mk("Cast", [p + "/acc"], [p + "/accf"], to=TensorProto.FLOAT),
                  mk("Mul", [p + "/accf", p + "/ws"], [p + "/y"]), mk("Mul", [p + "/y", p + "/s"], [n.output[0]])]
    g.ClearField("node")
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input}
    kept = [i for i in g.initializer if i.name in used]
    g.ClearField("initializer")
    g.initializer.extend(kept)
    onnx.save(model, str(dst))


def main(argv: list[str] | None = None) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from slmrec_cli.data import left_pad, load_dataset
    from slmrec_cli.export.model import load_export
    from slmrec_cli.export.onnx import export_onnx, onnx_scorer, session
    from slmrec_cli.export.onnx_quant import int8_excluded_nodes, quantize_int8, quiet_quantizer
    from slmrec_cli.export.smooth import _scores, activation_maxima, agreement, smoothed_copy
    from slmrec_cli.io import read_json

    ap = argparse.ArgumentParser()
    ap.add_argument("export", type=Path)
    ap.add_argument("--alpha", type=float, default=0.8)
    ap.add_argument("--users", type=int, default=256)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--work", type=Path, default=Path("/tmp/int8_error"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    cfg = read_json(a.export / "config.json")
    data = load_dataset(cfg["data"]["path"])
    rec, _ = load_export(a.export)
    order = np.random.default_rng(0).permutation(data.n_users)
    n = min(a.users, data.n_users // 2)

    def histories(users):
        return torch.from_numpy(left_pad([data.train_history(int(u)) for u in users], cfg["max_len"])).long()

    calib, held = histories(order[:n]), histories(order[n:2 * n])
    src = a.work / "smoothed.onnx"
    export_onnx(smoothed_copy(rec, activation_maxima(rec, calib), a.alpha), src)
    ref = _scores(rec.score_all, held)
    exclude = int8_excluded_nodes(src, outliers=False)

    def dynamic(**kw):
        def make(dst):
            with quiet_quantizer():
                quantize_dynamic(str(src), str(dst), per_channel=True, nodes_to_exclude=exclude, **kw)
        return make

    variants = {"per-tensor, s8 weights (shipped)": lambda d: quantize_int8(src, d, "smooth"),  # the export's own call
                "per-tensor, s8 weights, reduce_range": dynamic(weight_type=QuantType.QInt8, reduce_range=True),
                "per-tensor, u8 weights": dynamic(weight_type=QuantType.QUInt8),
                "per-token, u8 activations": lambda d: per_token_int8(src, d, exclude, "u8"),
                "per-token, s8 activations": lambda d: per_token_int8(src, d, exclude, "s8")}
    print(f"{a.export}: {data.name} `{data.content_hash}`, SmoothQuant α = {a.alpha} calibrated on {n} users' training "
          f"histories, scored on {n} other users' training histories against torch fp32; {a.threads} thread(s).\n")
    print("| int8 variant | top-10 overlap | relative error | seconds |\n|---|---:|---:|---:|")
    for i, (name, make) in enumerate(variants.items()):
        dst = a.work / f"variant-{i}.onnx"
        make(dst)
        score = onnx_scorer(session(dst, threads=a.threads))
        t = time.perf_counter()
        overlap, err = agreement(ref, _scores(score, held))
        print(f"| {name} | {overlap:.4f} | {err:.4f} | {time.perf_counter() - t:.1f} |", flush=True)


if __name__ == "__main__":
    main()
