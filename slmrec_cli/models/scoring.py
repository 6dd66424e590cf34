"""The one next-item scoring and cross-entropy every model trains with (SASRec, teacher, student, L_ms, L_kd)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def item_logits(users: torch.Tensor, id_table: torch.Tensor) -> torch.Tensor:
    """Scores of every item [K, n_items + 1] for user vectors [K, d0], in fp32; column 0 (padding) is -inf, so it is
    never a class."""
    logits = users.float() @ id_table.float().T
    logits[:, 0] = float("-inf")
    return logits


def next_item_ce(users: torch.Tensor, id_table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean full-softmax cross-entropy of the next item over every item of the table (paper Eq. 1), for user vectors
    [K, d0] and targets [K]; a row whose target is 0 (padding) is left out of the mean."""
    return F.cross_entropy(item_logits(users, id_table), targets, ignore_index=0)
