"""The distillation terms, named as in the paper. Inputs are last-token states stacked per block: [B, batch, d]."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from slmrec_cli.models.llmrec import item_logits, next_item_ce  # noqa: F401 (one scoring for model and terms)

NORM_LOSSES = ("squared", "l2", "normalized")


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
    raise ValueError(f"unknown norm loss {kind!r}; choose from {NORM_LOSSES}")


def l_kd(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Response-based distillation (Hinton et al., 2015; not in the paper): τ²·KL(p_teacher ‖ p_student) of the
    next-item distributions over every item, both softened by τ; mean over the batch. Column 0 (padding) is left out."""
    s = F.log_softmax(student_logits[:, 1:].float() / temperature, dim=-1)
    t = F.log_softmax(teacher_logits[:, 1:].float().detach() / temperature, dim=-1)
    return F.kl_div(s, t, log_target=True, reduction="batchmean") * temperature**2


def l_ms(block_users: list[torch.Tensor], id_table: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Eq. 5: mean CE of the B−1 intermediate-block adapters' predictions."""
    if not block_users:
        return id_table.new_zeros(())
    return torch.stack([next_item_ce(u, id_table, targets) for u in block_users]).mean()


def total_loss(ce: torch.Tensor, cos: torch.Tensor, norm: torch.Tensor, ms: torch.Tensor, *, lambda_cos: float,
               lambda_norm: float, lambda_ms: float, kd: torch.Tensor | None = None,
               lambda_kd: float = 0.0) -> torch.Tensor:
    """Eq. 6: CE + λ1(1 − D_cos) + λ2 D_norm + λ3 L_ms (+ λ_kd L_kd, off by default); a zero λ drops its term (and its
    gradient) entirely."""
    loss = ce
    if lambda_cos:
        loss = loss + lambda_cos * (1 - cos)
    if lambda_norm:
        loss = loss + lambda_norm * norm
    if lambda_ms:
        loss = loss + lambda_ms * ms
    if lambda_kd:
        loss = loss + lambda_kd * kd
    return loss
