"""Learning curves: validation MRR at every validation of a run, read from its train_log.jsonl."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from slmrec_cli.io import atomic_path
from slmrec_cli.report.collect import Result, label
from slmrec_cli.runs import RunKind

MISSING = "_No run has validation records in its train_log.jsonl._"


def valid_points(run: Result) -> list[tuple[float, int, float]]:
    """(epochs trained, step, valid MRR) for each validation; epochs from the step and the run's steps per epoch."""
    log = run.path / "train_log.jsonl"
    if not log.exists():
        return []
    rows = []
    for line in log.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("event") == "valid":
            rows.append(rec)
    if not rows:
        return []
    if all("epochs" in r for r in rows):  # epochs trained, logged by the engine
        return [(r["epochs"], r["step"], r["valid_MRR"]) for r in rows]
    per_epoch = min(r["step"] / r["epoch"] for r in rows if r.get("epoch")) if any(r.get("epoch") for r in rows) else 0
    return [(r["step"] / per_epoch if per_epoch else 0.0, r["step"], r["valid_MRR"]) for r in rows]  # older logs


def learning_curves(runs: list[Result], image: Callable[[str], tuple[Path, str]]) -> str:
    """SASRec, every teacher depth and the main students: valid MRR (sampled) against epochs trained."""
    chosen = [r for r in runs if r.kind in (RunKind.SASREC, RunKind.TEACHER)]
    chosen += [r for r in runs if r.kind is RunKind.STUDENT and r.options.mode == "offline"][:3]
    curves = {f"{label(r)} `{r.name}`": pts for r in chosen if (pts := valid_points(r))}
    if not curves:
        return MISSING
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name, pts in curves.items():
        ax.plot([p[0] for p in pts], [100 * p[2] for p in pts], marker="o", markersize=3, label=name.split(" `")[0])
    ax.set_xlabel("epochs trained")
    ax.set_ylabel("valid MRR (%), sampled")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    file, link = image("learning-curves")
    with atomic_path(file) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    lines = ["Validation MRR (sampled, %) at each validation, against epochs trained (steps ÷ steps per epoch; "
             "SASRec's epochs are its own windows at batch 128). The selected weights are each run's best point; "
             "test is read once, after selection.", "", f"![learning curves]({link})", "",
             "| run | points (epoch: valid MRR %) | best |", "|---|---|---:|"]
    for name, pts in curves.items():
        shown = ", ".join(f"{e:.1f}: {100 * m:.2f}" for e, _, m in pts[:12]) + (" …" if len(pts) > 12 else "")
        lines.append(f"| {name} | {shown} | {100 * max(p[2] for p in pts):.2f} |")
    return "\n".join(lines) + "\n"
