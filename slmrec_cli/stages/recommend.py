"""`slmrec recommend`: top-k next items from an export, by raw item ids, history excluded."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.config.export import INT8_SERVES, RecommendConfig
from slmrec_cli.data import left_pad, read_item_map
from slmrec_cli.errors import SlmrecError


def parse_history(text: str, index: dict[str, int], where: str) -> np.ndarray:
    raw = [x.strip() for x in text.split(",") if x.strip()]
    if not raw:
        raise SlmrecError(f"{where}: the history is empty; give at least one item id")
    unknown = [x for x in raw if x not in index]
    if unknown:
        shown = ", ".join(repr(x) for x in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise SlmrecError(f"{where}: unknown item ids {shown}; use raw ids from the dataset's item_map.tsv")
    return np.asarray([index[x] for x in raw], dtype=np.int64)


def choose_variant(model: Path, requested: str | None) -> tuple[str, str]:
    """(variant, why): the one asked for, or onnx-int8 when its measured quality holds (quality.json), else
    onnx-fp32, else torch-fp32."""
    from slmrec_cli.export.variants import present

    have = [v.name for v in present(model)]
    if requested is not None:
        if requested not in have:
            raise SlmrecError(f"{model} has no {requested} variant (it has {', '.join(have) or 'none'}); pass one of "
                              "those to --variant, or export it with `slmrec export --quantize`")
        return requested, "asked for"
    if importlib.util.find_spec("onnxruntime") is None:  # no ONNX Runtime here: the torch module serves
        have = [n for n in have if not n.startswith("onnx")]
    quality = model / "quality.json"
    rel = {}
    if quality.exists():
        try:
            rel = {r["name"]: r.get("relative_mrr") for r in json.loads(quality.read_text()).get("variants", [])}
        except (ValueError, AttributeError, TypeError, KeyError):
            ui.info(f"[yellow]{quality} is unreadable: serving without its measured quality[/]")
    if "onnx-int8" in have and (rel.get("onnx-int8") or 0) >= INT8_SERVES:
        return "onnx-int8", f"relative MRR {rel['onnx-int8']:.3f} ≥ {INT8_SERVES} in quality.json"
    for name in ("onnx-fp32", "torch-fp32"):
        if name in have:
            why = f"onnx-int8's relative MRR below {INT8_SERVES}" if "onnx-int8" in have else "onnx-int8 absent here"
            return name, why
    raise SlmrecError(f"{model} holds no variant recommend can serve; run `slmrec export` again")


def load_scorer(model: Path, requested: str | None = None):
    """The chosen variant's scorer (ONNX Runtime for ONNX files, torch otherwise); says which on stderr."""
    from slmrec_cli.export.variants import FILES, Variant, scorer

    name, why = choose_variant(model, requested)
    ui.info(f"serving {name} ({why})")
    runtime = "ort" if name.startswith("onnx") else "torch"
    return scorer(Variant(name, model / FILES[name]), model, runtime, "cpu")[0]


def recommend(cfg: RecommendConfig) -> list[list[str]]:
    model, history, input, k, json_out = Path(cfg.model), cfg.history, cfg.input, cfg.k, cfg.json_out
    from slmrec_cli.export.files import ITEM_MAP, read_manifest, verify

    max_len = read_manifest(model)["max_len"]  # an export in the current layout, its manifest unaltered
    verify(model, [ITEM_MAP])
    raw_ids = read_item_map(model / ITEM_MAP)
    index = {raw: i for i, raw in enumerate(raw_ids) if i > 0}
    if history is not None:
        histories = [parse_history(history, index, "--history")]
    else:
        if not Path(input).exists():
            raise SlmrecError(f"--input {input} does not exist")
        lines = Path(input).read_text().splitlines()
        histories = [parse_history(line, index, f"{input} line {n}") for n, line in enumerate(lines, 1)
                     if line.strip()]
        if not histories:
            raise SlmrecError(f"--input {input} has no histories; write one comma-separated history per line")
    score_all = load_scorer(model, cfg.variant)
    results = []
    for start in range(0, len(histories), 64):
        chunk = histories[start : start + 64]
        scores = score_all(torch.from_numpy(left_pad(chunk, max_len))).clone()
        scores[:, 0] = float("-inf")
        for row, h in enumerate(chunk):
            scores[row, torch.from_numpy(h)] = float("-inf")  # never recommend what the user already has
        top = scores.topk(min(k, scores.shape[1] - 1), dim=1)
        for row, h in enumerate(chunk):
            items = [raw_ids[i] for i, s in zip(top.indices[row].tolist(), top.values[row].tolist(), strict=True)
                     if s != float("-inf")]
            results.append(items)
            if json_out:
                print(json.dumps({"history": [raw_ids[i] for i in h], "items": items}))
            else:
                ui.out.print("\n".join(f"{n:>3}. {item}" for n, item in enumerate(items, 1)), highlight=False)
    return results
