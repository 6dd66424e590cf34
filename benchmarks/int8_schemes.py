"""Which int8 (and int4) ONNX scheme keeps a model's quality, and what it costs: one process, one table.

python benchmarks/int8_schemes.py EXPORT_DIR [--threads 1] [--batch 512] [--work /tmp/int8_schemes]

Makes each ONNX variant of EXPORT_DIR's model: fp32; int8 smooth (SmoothQuant α = 0.5, 0.65, 0.8, then dynamic int8,
as `--int8-scheme smooth --smooth-alpha α`); int8 dynamic (`--int8-scheme dynamic`); int8 block with int8 compute
(`--int8-scheme block`); int8 block weight-only; int4 block with int8 compute. Scores each on the export's test split
(sampled protocol, MRR) and times one batch of random histories. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch


def main() -> None:
    from slmrec_cli.data import load_dataset
    from slmrec_cli.evaluation.evaluate import rank_split
    from slmrec_cli.export.bench import random_histories
    from slmrec_cli.export.model import load_export
    from slmrec_cli.export.onnx import export_onnx, onnx_scorer, session
    from slmrec_cli.export.onnx_quant import matmul_nbits, quantize_int8
    from slmrec_cli.export.smooth import activation_maxima, calibration_histories, smoothed_copy
    from slmrec_cli.io import read_json

    ap = argparse.ArgumentParser()
    ap.add_argument("export", type=Path)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--work", type=Path, default=Path("/tmp/int8_schemes"))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    a.work.mkdir(parents=True, exist_ok=True)
    src = a.export / "model.onnx"
    cfg = read_json(a.export / "config.json")
    data = load_dataset(cfg["data"]["path"])
    rec, _ = load_export(a.export)
    variants = {"fp32": src}
    maxima = activation_maxima(rec, calibration_histories(data, cfg["max_len"]))
    for alpha in (0.5, 0.65, 0.8):
        smooth_src = a.work / f"smoothed-{alpha}.onnx"
        export_onnx(smoothed_copy(rec, maxima, alpha), smooth_src)
        variants[f"int8 smooth α={alpha}"] = a.work / f"smooth-{alpha}.int8.onnx"
        quantize_int8(smooth_src, variants[f"int8 smooth α={alpha}"], "smooth")
    for name, make in (("int8 dynamic", lambda d: quantize_int8(src, d, "dynamic")),
                       ("int8 block, int8 compute", lambda d: quantize_int8(src, d, "block")),
                       ("int8 block, weight-only", lambda d: matmul_nbits(src, d, bits=8, accuracy_level=None)),
                       ("int4 block, int8 compute", lambda d: matmul_nbits(src, d, bits=4, accuracy_level=4))):
        dst = a.work / (name.replace(" ", "_").replace(",", "") + ".onnx")
        make(dst)
        variants[name] = dst
    x = random_histories(a.batch, cfg["max_len"], cfg["n_items"], seed=1)
    rows, base = [], None
    for name, path in variants.items():
        score = onnx_scorer(session(path, threads=a.threads))
        mrr = rank_split(score, data, "test", ("sampled",), max_len=cfg["max_len"], batch_size=64,
                         desc=name)["sampled"].metrics["MRR"]
        base = base or mrr
        score(x[:8])
        t = time.perf_counter()
        score(x)
        rows.append((name, path.stat().st_size / 1e6, mrr, mrr / base, time.perf_counter() - t))
    print(f"{a.export}: {data.name} `{data.content_hash}` test split, sampled protocol; one batch of {a.batch} "
          f"random histories of length {cfg['max_len']}, {a.threads} thread(s), ONNX Runtime CPU.\n")
    print("| ONNX variant | file MB | test MRR % | rel. MRR | batch s | speed-up |\n|---|---:|---:|---:|---:|---:|")
    for name, mb, mrr, rel, sec in rows:
        print(f"| {name} | {mb:.1f} | {100 * mrr:.2f} | {rel:.3f} | {sec:.1f} | {rows[0][4] / sec:.2f}× |")


if __name__ == "__main__":
    main()
