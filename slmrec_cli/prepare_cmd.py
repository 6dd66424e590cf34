"""`slmrec prepare`: raw log → dataset directory, with a Table-1-style summary."""

from __future__ import annotations

from pathlib import Path

from rich.table import Table

from slmrec_cli import ui
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import file_sha256


def stats_table(name: str, stats: dict) -> Table:
    table = Table(title=f"dataset {name}", title_justify="left")
    for col in ("users", "items", "interactions", "density", "avg length"):
        table.add_column(col, justify="right")
    table.add_row(f"{stats['users']:,}", f"{stats['items']:,}", f"{stats['interactions']:,}",
                  f"{100 * stats['density']:.3f}%", f"{stats['mean_length']:.1f}")
    return table


def run_prepare(*, dataset: str | None, input: Path | None, format: str | None, csv_options: dict,
                min_rating: float, k_core: int, keep_duplicates: bool, num_negatives: int, seed: int,
                name: str | None, out: Path | None, force: bool) -> Path:
    from slmrec_cli.data import builtin_dataset, prepare, read_log, save_dataset

    if (dataset is None) == (input is None):
        raise SlmrecError("give exactly one of --dataset NAME (ml-100k, ml-1m) or --input FILE --format F")
    if dataset is not None:
        path, fmt = builtin_dataset(dataset)
        source = {"kind": "builtin", "dataset": dataset, "file": path.name}
        name = name or dataset
    else:
        if format is None:
            raise SlmrecError(f"--input {input} needs --format (amazon-json, amazon-csv, movielens, recbole, csv)")
        path, fmt = Path(input), format
        source = {"kind": "file", "path": str(path), "format": fmt}
        name = name or path.name.split(".")[0]
    log = read_log(path, fmt, **(csv_options if fmt == "csv" else {}))
    source["file_sha256"] = file_sha256(path)
    options = {"min_rating": min_rating, "k_core": k_core, "keep_duplicates": keep_duplicates,
               "num_negatives": num_negatives, "seed": seed}
    out = Path(out) if out else Path("data") / name
    prepared = prepare(log, **options)
    save_dataset(prepared, out, name=name, source=source, options=options, force=force)
    ui.info(f"wrote {out}")
    if not ui.quiet():
        ui.out.print(stats_table(name, prepared.stats))
    return out
