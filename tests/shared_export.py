"""One export of the session's tiny teacher, shared by the export test modules (building it is their slowest step).
Read it as it is; a test that damages or edits it works on a copy."""

from __future__ import annotations

_BUILT: dict[str, tuple] = {}


def shared_export(tiny_runs, tmp_path_factory) -> tuple:
    """(data dir, run, export dir, export result): every variant (onnx int8/int4/fp16, bnb), quality and a benchmark."""
    if "export" not in _BUILT:
        import torch

        from slmrec_cli.config.export import ExportConfig
        from slmrec_cli.stages.export import export

        data, _, run = tiny_runs
        torch.set_num_threads(1)
        out = tmp_path_factory.mktemp("export") / "exp"
        result = export(run, out, ExportConfig(format=["onnx", "safetensors"], quantize=["int8", "int4", "fp16"],
                                               bench=True, batch_sizes=[1, 4], threads=1, min_seconds=0.0))
        _BUILT["export"] = (data, run, out, result)
    return _BUILT["export"]


def histories(n_items, batch=5, length=8, seed=1):
    """Random left-padded histories [batch, length] of item ids 1..n_items, each with its own amount of padding."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, size=(batch, length))
    for row in range(batch):
        items[row, : rng.integers(0, length - 1)] = 0
    return torch.from_numpy(items)
