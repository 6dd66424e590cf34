"""`slmrec prepare`: raw log → dataset directory, with a Table-1-style summary; its result is the dataset's
meta.json with its path."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.table import Table

from slmrec_cli import ui
from slmrec_cli.config.data import COLUMN_OPTIONS, PrepareConfig
from slmrec_cli.io import file_sha256, read_json


def stats_table(name: str, stats: dict) -> Table:
    table = Table(title=f"dataset {name}", title_justify="left")
    for col in ("users", "items", "interactions", "density", "avg length"):
        table.add_column(col, justify="right")
    table.add_row(f"{stats['users']:,}", f"{stats['items']:,}", f"{stats['interactions']:,}",
                  f"{100 * stats['density']:.3f}%", f"{stats['mean_length']:.1f}")
    return table


def prepare_dataset(cfg: PrepareConfig) -> Path:
    from slmrec_cli.data import builtin_dataset, prepare, read_log, save_dataset

    if cfg.dataset is not None:
        path, fmt = builtin_dataset(cfg.dataset)
        source = {"kind": "builtin", "dataset": cfg.dataset, "file": path.name}
        name = cfg.name or cfg.dataset
    else:
        assert cfg.input is not None  # PrepareConfig takes exactly one of --input and --dataset
        path, fmt = Path(cfg.input), str(cfg.format)
        source = {"kind": "file", "path": str(path), "format": fmt}
        name = cfg.name or path.name.split(".")[0]
    csv_options = {k: getattr(cfg, k) for k in COLUMN_OPTIONS}
    log = read_log(path, fmt, **(csv_options if fmt == "csv" else {}))
    source["file_sha256"] = file_sha256(path)
    options: dict[str, Any] = {"min_rating": cfg.min_rating, "k_core": cfg.k_core,
                               "keep_duplicates": cfg.keep_duplicates, "num_negatives": cfg.num_negatives,
                               "seed": cfg.seed}
    out = Path(cfg.out) if cfg.out else Path("data") / name
    prepared = prepare(log, **options)
    del log  # the raw log (0.8 GB at 32 M rows) is not needed while the negatives are drawn and written
    save_dataset(prepared, out, name=name, source=source, options=options, force=cfg.force)
    ui.info(f"wrote {out}")
    return out


def main(cfg: PrepareConfig) -> dict:
    """`slmrec prepare`: the dataset, its summary table; the result is its meta.json and path."""
    out = prepare_dataset(cfg)
    meta = read_json(out / "meta.json")
    if not ui.quiet():
        ui.out.print(stats_table(meta.get("name", out.name), meta["stats"]))
    return {"path": str(out), **meta}
