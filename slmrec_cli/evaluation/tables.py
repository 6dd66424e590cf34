"""Side-by-side Rich tables of metrics records (values shown in percent, stored as fractions)."""

from __future__ import annotations

from rich.table import Table

from slmrec_cli import ui
from slmrec_cli.evaluation.ranking import METRIC_NAMES


def records_table(records: list[dict], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("run", "split", "protocol", "cands", "users"):
        table.add_column(col, justify="left" if col in ("run", "split", "protocol") else "right")
    for name in METRIC_NAMES:
        table.add_column(name + " %", justify="right")
    for r in records:
        cells = []
        for m in METRIC_NAMES:
            v = f"{100 * r['metrics'][m]:.2f}"
            same_group = [x for x in records if x["split"] == r["split"] and x["protocol"] == r["protocol"]]
            top = max(x["metrics"][m] for x in same_group)
            cells.append(f"[bold]{v}[/]" if len(same_group) > 1 and r["metrics"][m] == top else v)
        table.add_row(r["run"], r["split"], r["protocol"], str(r["candidates"]), str(r["users"]), *cells)
    dataset = {(r["dataset"], r["data_hash"][:12]) for r in records}
    table.caption = "; ".join(f"{d} ({h})" for d, h in sorted(dataset)) + \
        " · pessimistic ties · PROTOCOL.md" + \
        (" · full protocol masks history" if any(r["mask_history"] for r in records) else "")
    return table


def print_records(records: list[dict], title: str | None = None) -> None:
    ui.out.print(records_table(records, title))
