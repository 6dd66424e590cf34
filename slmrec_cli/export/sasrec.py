"""SASRec, the baseline, as an ONNX graph with the same contract as an LLM export's (items [B, T] → user, scores), so
its serving cost can be set beside the LLM models' (benchmarks/serving_latency.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from slmrec_cli.errors import SlmrecError

CHECK_RTOL = 1e-4  # as the LLM export's fp32 check


class SASRecServing(nn.Module):
    """items [B, T] (left-padded, any T; the last max_len are read) → (user vectors [B, d], scores [B, n_items + 1])."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("id_table", model.item_table().detach().clone())

    def forward(self, items: torch.Tensor):
        user = self.model.user_vectors(items)
        return user, user @ self.id_table.T


def export_sasrec_onnx(run: Path, path: Path, histories: torch.Tensor) -> dict:
    """`path` ← the SASRec run traced to ONNX (fp32), then checked against torch on `histories` (two lengths): the
    export fails when the scores differ beyond rtol 1e-4. Returns the check."""
    from slmrec_cli.export.onnx import onnx_scorer, session
    from slmrec_cli.io import atomic_path
    from slmrec_cli.runs import Run, RunKind

    loaded = Run.load(run).require(RunKind.SASREC, hint="not a SASRec run (pretrain-ids)")
    model = loaded.load_model("cpu")
    wrapper = SASRecServing(model).eval()
    example = torch.tensor([[0, 0, 1, 2, 3], [1, 2, 3, 4, 5]], dtype=torch.long)
    with atomic_path(Path(path)) as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, (example,), str(tmp), input_names=["items"], output_names=["user", "scores"],
                          dynamic_axes={"items": {0: "batch", 1: "length"}, "user": {0: "batch"},
                                        "scores": {0: "batch"}}, opset_version=17, dynamo=False)
    score = onnx_scorer(session(Path(path), threads=1))
    worst = 0.0
    for items in (histories, histories[:, -max(2, histories.shape[1] // 2):]):
        with torch.no_grad():
            expected = wrapper(items)[1]
        got = score(items)
        worst = max(worst, float((got - expected).abs().max() / expected.abs().max().clamp_min(1e-12)))
    if not np.isfinite(worst) or worst > CHECK_RTOL:
        Path(path).unlink(missing_ok=True)
        raise SlmrecError(f"SASRec's ONNX graph disagrees with torch (relative {worst:.1e} > {CHECK_RTOL}); not kept")
    return {"max_rel_diff": worst, "max_len": loaded.model.max_len, "n_items": int(model.item_table().shape[0] - 1)}
