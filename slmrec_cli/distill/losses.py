"""The distillation terms, named as in the paper. Inputs are last-token states stacked per block: [blocks, batch, d]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slmrec_cli.models.scoring import chunk_rows, chunked_mean, item_logits, next_item_ce


def d_cos(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """Eq. 3: cosine similarity of student and teacher features, averaged over blocks (and the batch)."""
    return F.cosine_similarity(student.float(), teacher.float(), dim=-1).mean()


def d_norm(student: torch.Tensor, teacher: torch.Tensor, kind: str = "squared") -> torch.Tensor:
    """Eq. 4: distance of the features, averaged over blocks (and the batch).
    squared = ||s - t||² (the paper); l2 = ||s - t||; normalized = ||s - t||² / ||t||² (scale-free)."""
    s, t = student.float(), teacher.float()
    sq = (s - t).pow(2).sum(-1)
    if kind == "squared":
        return sq.mean()
    if kind == "l2":
        return sq.clamp_min(1e-12).sqrt().mean()
    if kind == "normalized":
        return (sq / t.pow(2).sum(-1).clamp_min(1e-12)).mean()
    raise ValueError(f"unknown norm loss {kind!r}; choose from squared, l2, normalized")


def l_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Response-based distillation (Hinton et al., 2015; not in the paper): τ²·KL(p_teacher ‖ p_student) of the
    next-item distributions over every item, both softened by τ; mean over the batch. Column 0 (padding) is left out."""
    s = F.log_softmax(student_logits[:, 1:].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[:, 1:].float().detach() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def l_kd_items(student_users: torch.Tensor, teacher_users: torch.Tensor, id_table: torch.Tensor,
               temperature: float = 1.0) -> torch.Tensor:
    """l_kd of the item logits of user vectors [K, d0], a chunk of rows at a time, so the [K, n_items] logits of both
    models never exist at once (the same value as l_kd on the whole logits, up to rounding)."""

    def chunk_sum(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return l_kd(item_logits(s, id_table), item_logits(t, id_table), temperature) * len(s)

    return chunked_mean(chunk_sum, chunk_rows(id_table.shape[0]), student_users, teacher_users)


def l_ms(block_users: list[torch.Tensor], id_table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 5: mean CE of the B−1 intermediate-block adapters' predictions."""
    if not block_users:
        return id_table.new_zeros(())
    return torch.stack([next_item_ce(u, id_table, targets) for u in block_users]).mean()

