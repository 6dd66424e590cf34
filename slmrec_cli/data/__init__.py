"""Data layer: read interaction logs, prepare leave-one-out sequences, store and load datasets."""

from slmrec_cli.data.builtin import BUILTIN_DATASETS, builtin_dataset
from slmrec_cli.data.prepare import Prepared, prepare, sample_negatives
from slmrec_cli.data.readers import CSV_DEFAULTS, FORMATS, Log, read_log
from slmrec_cli.data.store import (
    SeqData,
    content_hash,
    is_dataset,
    left_pad,
    load_dataset,
    pad_to_longest,
    read_item_map,
    save_dataset,
    training_windows,
    trim_windows,
    window_inputs_targets,
    window_lengths,
)

__all__ = [
    "BUILTIN_DATASETS",
    "CSV_DEFAULTS",
    "FORMATS",
    "Log",
    "Prepared",
    "SeqData",
    "builtin_dataset",
    "content_hash",
    "is_dataset",
    "left_pad",
    "load_dataset",
    "pad_to_longest",
    "prepare",
    "read_item_map",
    "read_log",
    "sample_negatives",
    "save_dataset",
    "training_windows",
    "trim_windows",
    "window_inputs_targets",
    "window_lengths",
]
