"""`slmrec recommend`: top-k next items from an export, by raw item ids, history excluded. The result is one
{"history", "items"} object (--history), or a list of them (--input); --jsonl streams them one per line."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.config.export import INT8_FLOOR, INT8_SERVES, RecommendConfig
from slmrec_cli.config.fields import split_commas
from slmrec_cli.data import pad_to_longest, read_item_map
from slmrec_cli.errors import SlmrecError


def parse_history(text: str, index: dict[str, int], where: str) -> np.ndarray:
    raw = split_commas(text)
    if not raw:
        raise SlmrecError(f"{where}: the history is empty; give at least one item id")
    unknown = [x for x in raw if x not in index]
    if unknown:
        shown = ", ".join(repr(x) for x in unknown[:5]) + (" …" if len(unknown) > 5 else "")
        raise SlmrecError(f"{where}: unknown item ids {shown}; use raw ids from the dataset's item_map.tsv")
    return np.asarray([index[x] for x in raw], dtype=np.int64)


def int8_holds(record: dict) -> tuple[bool, str]:
    """(whether onnx-int8 serves by default, why), from its quality.json record: its relative MRR is ≥ 0.99, or it
    is ≥ 0.97 and its paired 95 % interval reaches 0.99, i.e. the test users do not show a loss beyond 1 %. On
    ml-100k's 938 test users one user's rank moves the ratio by ~1 %, so a point estimate alone would serve int8 or
    not by the luck of the draw (docs/export.md); the floor keeps a tiny test set's wide interval from serving a
    quantization that clearly lost quality."""
    try:
        rel = float(record["relative_mrr"])
        lo, hi = (float(x) for x in record.get("relative_mrr_ci95") or (rel, rel))
    except (KeyError, TypeError, ValueError):
        return False, "onnx-int8's quality is not measured in quality.json"
    interval = f"{lo:.3f}–{hi:.3f}"
    if rel >= INT8_SERVES:
        return True, f"relative MRR {rel:.3f} ≥ {INT8_SERVES} in quality.json (95 % interval {interval})"
    if rel >= INT8_FLOOR and hi >= INT8_SERVES:
        return True, (f"relative MRR {rel:.3f}, its paired 95 % interval {interval} reaching {INT8_SERVES}: the test "
                      "users show no loss beyond 1 %")
    return False, f"onnx-int8's relative MRR {rel:.3f} (95 % interval {interval}) shows a loss beyond 1 %" \
        if rel >= INT8_FLOOR else f"onnx-int8's relative MRR {rel:.3f} below {INT8_FLOOR}"


def choose_variant(export: Path, requested: str | None) -> tuple[str, str]:
    """(variant, why) to serve from the export directory `export`: the one asked for, or onnx-int8 when its measured
    quality holds (quality.json), else onnx-fp32, else torch-fp32."""
    from slmrec_cli.export.variants import present

    have = [v.name for v in present(export)]
    if requested is not None:
        if requested not in have:
            failed = failed_at_export(export).get(requested)
            raise SlmrecError(f"{export} has no {requested} variant" + (
                f": it failed its check against torch at export ({failed})" if failed else
                f" (it has {', '.join(have) or 'none'}); pass one of those to --variant, or export it with "
                "`slmrec export --quantize`"))
        return requested, "asked for"
    if importlib.util.find_spec("onnxruntime") is None:  # no ONNX Runtime here: the torch module serves
        have = [n for n in have if not n.startswith("onnx")]
    quality = export / "quality.json"
    measured = {}
    if quality.exists():
        try:
            measured = {r["name"]: r for r in json.loads(quality.read_text()).get("variants", [])}
        except (ValueError, AttributeError, TypeError, KeyError):
            ui.info(f"[yellow]{quality} is unreadable: serving without its measured quality[/]")
    holds, why_not = int8_holds(measured.get("onnx-int8") or {}) if "onnx-int8" in have else (False, "")
    if holds:
        return "onnx-int8", why_not
    for name in ("onnx-fp32", "torch-fp32"):
        if name in have:
            return name, why_not if "onnx-int8" in have else "onnx-int8 absent here"
    raise SlmrecError(f"{export} holds no variant recommend can serve; run `slmrec export` again")


def failed_at_export(export: Path) -> dict[str, str]:
    """{variant: why} of the variants the export left out because they failed their check (quality.json)."""
    try:
        return {f["name"]: f["why"] for f in json.loads((export / "quality.json").read_text()).get("failed", [])}
    except (OSError, ValueError, AttributeError, TypeError, KeyError):
        return {}


def serving_provider(runtime: str, device: str, variant: str = "onnx-fp32") -> str:
    """The scorer's provider for --device: cpu, or cuda where the runtime can use a GPU (auto: when one is visible
    and, for ONNX files, ONNX Runtime has its CUDA provider and the variant is made for it: onnx-int8 and onnx-int4
    stay on the CPU provider unless --device cuda asks, export.variants.ort_cuda_by_default)."""
    from slmrec_cli.devices import resolve_device
    from slmrec_cli.export.variants import ort_cuda_available, ort_cuda_by_default

    if device == "auto":
        gpu = (ort_cuda_available() and ort_cuda_by_default(variant)) if runtime == "ort" else torch.cuda.is_available()
        return "cuda" if gpu else "cpu"
    return "cpu" if resolve_device(device) == "cpu" else "cuda"


def load_scorer(export: Path, requested: str | None = None, device: str = "cpu"):
    """The chosen variant's scorer (ONNX Runtime for ONNX files, torch otherwise); says which on stderr."""
    from slmrec_cli.export.variants import FILES, Variant, ort_cuda_by_default, scorer

    name, why = choose_variant(export, requested)
    runtime = "ort" if name.startswith("onnx") else "torch"
    provider = serving_provider(runtime, device, name)
    ui.info(f"serving {name} on {provider} ({why})")
    if runtime == "ort" and provider == "cuda" and not ort_cuda_by_default(name):
        ui.info(f"[yellow]{name} is made for ONNX Runtime's CPU provider: on CUDA, the nodes the CUDA provider has no "
                "kernel for (MatMulInteger with uint8 activations) run on the CPU, with copies both ways[/]")
    return scorer(Variant(name, export / FILES[name]), export, runtime, provider)[0]


def read_histories(cfg: RecommendConfig, index: dict[str, int]) -> list[np.ndarray]:
    if cfg.history is not None:
        return [parse_history(cfg.history, index, "--history")]
    assert cfg.input is not None  # RecommendConfig takes exactly one of --history and --input
    path = Path(cfg.input)
    if not path.exists():
        raise SlmrecError(f"--input {path} does not exist")
    lines = path.read_text().splitlines()
    histories = [parse_history(line, index, f"{path} line {n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not histories:
        raise SlmrecError(f"--input {path} has no histories; write one comma-separated history per line")
    return histories


def recommendations(cfg: RecommendConfig, chunk_size: int = 64) -> Iterator[dict]:
    """{"history": raw ids, "items": the top-k raw ids} for each history, in order, as each chunk is scored."""
    from slmrec_cli.export.files import ITEM_MAP, read_manifest, verify

    export = Path(cfg.export)
    max_len = read_manifest(export)["max_len"]  # an export in the current layout, its manifest unaltered
    verify(export, [ITEM_MAP])
    raw_ids = read_item_map(export / ITEM_MAP)
    index = {raw: i for i, raw in enumerate(raw_ids) if i > 0}
    histories = read_histories(cfg, index)
    score_all = load_scorer(export, cfg.variant, cfg.device)
    for start in range(0, len(histories), chunk_size):
        chunk = histories[start : start + chunk_size]
        scores = score_all(torch.from_numpy(pad_to_longest(chunk, max_len))).clone()
        scores[:, 0] = float("-inf")
        for row, h in enumerate(chunk):
            scores[row, torch.from_numpy(h)] = float("-inf")  # never recommend what the user already has
        top = scores.topk(min(cfg.k, scores.shape[1] - 1), dim=1)
        for row, h in enumerate(chunk):
            items = [raw_ids[i] for i, s in zip(top.indices[row].tolist(), top.values[row].tolist(), strict=True)
                     if s != float("-inf")]
            yield {"history": [raw_ids[i] for i in h], "items": items}


def main(cfg: RecommendConfig) -> dict | list[dict]:
    """`slmrec recommend`: a numbered list per history (or one JSON line each with --jsonl); the result is the
    history's recommendation, or the list of them for --input."""
    from slmrec_cli.json_output import active, emit

    results = []
    for rec in recommendations(cfg):
        results.append(rec)
        if cfg.jsonl:
            emit(rec)
        elif not active():  # with --json the document holds them; no second copy on stderr
            if len(results) > 1:
                ui.out.print()
            ui.out.print("\n".join(f"{n:>3}. {item}" for n, item in enumerate(rec["items"], 1)), highlight=False)
    return results[0] if cfg.history is not None else results
