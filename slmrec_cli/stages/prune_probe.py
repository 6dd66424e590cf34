"""`slmrec prune-probe` (paper Fig. 2a–c): read a trained teacher out at every layer, no training.
The last-token state after layer l goes through the run's own (final norm →) down-projection and is scored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from slmrec_cli import __version__, ui
from slmrec_cli.base_model import base_label
from slmrec_cli.config.evaluate import ProbeConfig
from slmrec_cli.config.fields import split_commas
from slmrec_cli.data import load_dataset, pad_to_longest
from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.evaluate import eval_precision
from slmrec_cli.evaluation.ranking import METRIC_NAMES, metrics_from_ranks, pessimistic_ranks
from slmrec_cli.io import read_json, write_json
from slmrec_cli.plots import metric_panels
from slmrec_cli.runs import LLM_KINDS, Run


def parse_layers(spec: str | None, depth: int) -> list[int]:
    if not spec:
        return list(range(1, depth + 1))
    try:
        layers = sorted({int(x) for x in split_commas(spec)})
    except ValueError:
        raise SlmrecError(f"--layers must be comma-separated layer numbers like 1,2,8, got '{spec}'") from None
    bad = [x for x in layers if not 1 <= x <= depth]
    if bad or not layers:
        raise SlmrecError(f"--layers {spec}: the run has layers 1..{depth}; pick numbers in that range")
    return layers


@torch.no_grad()
def probe_ranks(model, data, split: str, layers: list[int], *, final_norm: bool, batch_size: int = 32,
                device: str = "cpu") -> dict[int, np.ndarray]:
    """Sampled-protocol ranks of every user, per layer, from one forward pass per batch."""
    norm = model.final_norm()
    targets = data.split_target(split)
    ranks: dict[int, list] = {layer: [] for layer in layers}
    with ui.progress(f"probe {split}", total=data.n_users) as bar:
        for start in range(0, data.n_users, batch_size):
            users = np.arange(start, min(start + batch_size, data.n_users))
            hist = torch.from_numpy(pad_to_longest([data.split_input(split, int(u)) for u in users], model.cfg.max_len))
            _, states = model.hidden(hist.to(device), all_layers=True)
            negs = torch.from_numpy(data.negatives[users]).to(device)
            cands = torch.cat([torch.from_numpy(targets[users]).to(device)[:, None], negs], dim=1)
            for layer in layers:
                h = states[layer - 1]
                h = norm(h) if final_norm else h
                user = model.down(h.to(model.down.weight.dtype))
                scores = torch.einsum("bd,bcd->bc", user, model.id_table[cands])
                ranks[layer].append(pessimistic_ranks(scores[:, 0], scores[:, 1:], negs != 0).cpu())
            bar.advance(len(users))
    return {layer: torch.cat(r).numpy() for layer, r in ranks.items()}


def plot_probe(record: dict, path: Path, baseline: dict | None = None, baseline_name: str = "baseline") -> None:
    metric_panels([x["layer"] for x in record["layers"]], {"teacher layer": [x["metrics"] for x in record["layers"]]},
                  path, xlabel="layer", baseline=baseline, baseline_name=baseline_name,
                  title=f"per-layer probe of {record['run']} ({record['split']}, sampled, "
                        f"final norm {'on' if record['final_norm'] else 'off'})")


def baseline_metrics(run: Path, split: str) -> dict:
    path = Path(run) / "eval" / f"{split}-sampled.json"
    if not path.exists():
        raise SlmrecError(f"--baseline {run} has no {path.name}; run `slmrec evaluate {run} --split {split}` first")
    return read_json(path)["metrics"]


def prune_probe(c: ProbeConfig) -> dict:
    """The probe record (written to RUN/probe/<split>.json with its plot), with "files" naming what was written."""
    from slmrec_cli.devices import resolve_device

    run, split, layers, final_norm, baseline, batch_size = (c.run, c.split, c.layers, c.final_norm, c.baseline,
                                                            c.eval_batch)
    loaded = Run.load(run).require(*LLM_KINDS, hint="prune-probe reads LLM runs (train-teacher, distill)")
    chosen = parse_layers(layers, loaded.layers)
    base = baseline_metrics(baseline, split) if baseline else None
    data = load_dataset(loaded.data.path)
    loaded.check_data(data)
    device = resolve_device(c.device)
    model = loaded.load_model(device)
    ranks = probe_ranks(model, data, split, chosen, final_norm=final_norm, batch_size=batch_size, device=device)
    record = {"run": str(run), "split": split, "protocol": "sampled", "final_norm": final_norm,
              "dataset": data.name, "data_hash": data.content_hash, "users": data.n_users,
              "candidates": int(data.negatives.shape[1] + 1), "version": __version__,
              "base_model": loaded.llm_base.ref, "pretrained": loaded.llm_base.pretrained,
              "weights": base_label(loaded.llm_base) or "pretrained", "quantization": loaded.quantization,
              "eval_precision": eval_precision(model),
              "layers": [{"layer": layer, "metrics": metrics_from_ranks(ranks[layer])} for layer in chosen]}
    out = Path(run) / "probe"
    write_json(out / f"{split}.json", record)
    plot_probe(record, out / f"{split}.png", base, Path(baseline).name if baseline else "baseline")
    ui.info(f"wrote {out / f'{split}.json'} and {out / f'{split}.png'}")
    return {**record, "baseline": base, "files": [str(out / f"{split}.json"), str(out / f"{split}.png")]}


def main(cfg: ProbeConfig) -> dict:
    """`slmrec prune-probe`: the probe, its table; the result is the probe record, the baseline's metrics and the
    files written."""
    result = prune_probe(cfg)
    print_probe(result, result["baseline"])
    return result


def print_probe(record: dict, baseline: dict | None) -> None:
    from rich.table import Table

    table = Table(title=f"probe {record['run']} · {record['split']} · sampled · final norm "
                        f"{'on' if record['final_norm'] else 'off'} · metrics in %", title_justify="left")
    table.add_column("layer", justify="right")
    for m in METRIC_NAMES:
        table.add_column(m, justify="right")
    for row in record["layers"]:
        table.add_row(str(row["layer"]), *(f"{100 * row['metrics'][m]:.2f}" for m in METRIC_NAMES))
    if baseline:
        table.add_row("baseline", *(f"{100 * baseline[m]:.2f}" for m in METRIC_NAMES), style="dim")
    ui.out.print(table)
