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


def paired_bootstrap(ranks: np.ndarray, base_ranks: np.ndarray, resamples: int = 2000,
                     seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Both models' MRR on the same bootstrap resamples of the users ([resamples] each): users are drawn with
    replacement and both models are scored on each draw. The two arrays must list the same users in the same order."""
    a, b = 1.0 / (np.asarray(ranks, dtype=np.float64) + 1), 1.0 / (np.asarray(base_ranks, dtype=np.float64) + 1)
    if a.shape != b.shape or a.size == 0:
        raise SlmrecError(f"a paired comparison needs the same users for both models ({a.size} vs {b.size} ranks)")
    idx = np.random.default_rng(seed).integers(0, a.size, size=(resamples, a.size))
    return a[idx].mean(1), b[idx].mean(1)


def relative_mrr_ci(ranks: np.ndarray, base_ranks: np.ndarray, resamples: int = 2000, seed: int = 0,
                    level: float = 0.95) -> tuple[float, float]:
    """Paired bootstrap interval of MRR(ranks) / MRR(base_ranks) (paired_bootstrap), so the interval reflects how much
    the ratio moves with the choice of test users."""
    ma, mb = paired_bootstrap(ranks, base_ranks, resamples, seed)
    lo, hi = np.quantile(ma / np.maximum(mb, 1e-12), [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)
