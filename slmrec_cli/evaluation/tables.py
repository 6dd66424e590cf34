"""Side-by-side Rich tables of metrics records (values shown in percent, stored as fractions)."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from slmrec_cli import ui
from slmrec_cli.evaluation.ranking import METRIC_NAMES


def records_table(records: list[dict], title: str | None = None) -> Table:
    """One row per (run, split, protocol); the best value of each group of comparable rows in bold."""
    splits = sorted({r["split"] for r in records})
    table = Table(title=title or f"{'/'.join(splits)} split, metrics in %", title_justify="left")
    table.add_column("run", no_wrap=True)
    if len(splits) > 1:
        table.add_column("split", no_wrap=True)
    table.add_column("protocol", no_wrap=True)
    for name in METRIC_NAMES:
        table.add_column(name, justify="right", no_wrap=True)
    for r in records:
        group = [x for x in records if x["split"] == r["split"] and x["protocol"] == r["protocol"]]
        cells = []
        for m in METRIC_NAMES:
            v = f"{100 * r['metrics'][m]:.2f}"
            top = max(x["metrics"][m] for x in group)
            cells.append(f"[bold]{v}[/]" if len(group) > 1 and r["metrics"][m] == top else v)
        name = Path(r["run"]).name or r["run"]
        split = [r["split"]] if len(splits) > 1 else []
        proto = f"{r['protocol']} ({r['candidates']})"
        table.add_row(name, *split, proto, *cells)
    datasets = sorted({(r["dataset"], r["data_hash"][:12], r["users"]) for r in records})
    table.caption = "; ".join(f"{d} {h}, {u} users" for d, h, u in datasets) + \
        " · (n) = candidates · pessimistic ties" + \
        (" · full ranking masks history" if any(r["mask_history"] for r in records) else "")
    return table


def print_records(records: list[dict], title: str | None = None) -> None:
    ui.out.print(records_table(records, title))


def print_summary(summary: dict, title: str) -> None:
    """A training stage's summary: its records as one table (only the main process has them)."""
    if "records" in summary:
        print_records(summary["records"], title=title)
