"""Pessimistic ranks and the six metrics (PROTOCOL.md, "Ranks and metrics")."""

from __future__ import annotations

import numpy as np
import torch

from slmrec_cli.errors import SlmrecError

METRIC_NAMES = ("HR@1", "HR@5", "HR@10", "NDCG@5", "NDCG@10", "MRR")


def pessimistic_ranks(pos_scores: torch.Tensor, other_scores: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """rank = number of valid other candidates scoring >= the positive (ties count against the model).

    pos_scores [B], other_scores [B, C], valid [B, C] bool (False = padding / masked, never counted).
    """
    if torch.isnan(pos_scores).any() or torch.isnan(other_scores[valid]).any():
        raise SlmrecError("the model produced NaN scores; the run's weights are broken (retrain or check the run)")
    beats = (other_scores >= pos_scores.unsqueeze(1)) & valid
    return beats.sum(dim=1)


def metrics_from_ranks(ranks: np.ndarray) -> dict[str, float]:
    """Means over all users: HR@k, NDCG@k and MRR (no cutoff), as fractions."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.size == 0:
        raise SlmrecError("no users to evaluate; the dataset split is empty")
    out = {}
    for k in (1, 5, 10):
        out[f"HR@{k}"] = float(np.mean(ranks < k))
    for k in (5, 10):
        out[f"NDCG@{k}"] = float(np.mean(np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)))
    out["MRR"] = float(np.mean(1.0 / (ranks + 1.0)))
    return {name: out[name] for name in METRIC_NAMES}
