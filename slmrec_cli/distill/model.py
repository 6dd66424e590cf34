"""The student, its multi-supervision adapters and the teacher in one module, so one engine trains it."""

from __future__ import annotations

import copy

import torch
from torch import nn

from slmrec_cli.distill.losses import d_cos, d_norm, item_logits, l_kd, l_ms, next_item_ce, total_loss
from slmrec_cli.models.llmrec import LLMRec


class Distiller(nn.Module):
    """forward(items, targets[, teacher_feats]) → (loss, terms). Offline: the teacher is frozen and runs without
    grad (or its block features come from a cache). Online (RQ4): the teacher trains too, with its own CE; the
    alignment terms never push gradients into it.

    With lambda_kd > 0 the student also matches the teacher's next-item distribution (L_kd, beyond the paper). The
    teacher's scores come from its last block feature (its layer M): a frozen copy of its final norm and
    down-projection, kept in `teacher_head`, turns that state into its user vector, so a feature cache serves L_kd
    too and the teacher itself can be dropped."""

    def __init__(self, student: LLMRec, teacher: LLMRec | None, pairs: list[tuple[int, int]], *, lambda_cos: float,
                 lambda_norm: float, lambda_ms: float, norm_loss: str, online: bool, lambda_kd: float = 0.0,
                 kd_temperature: float = 1.0):
        super().__init__()
        self.student, self.teacher, self.pairs, self.online = student, teacher, pairs, online
        self.lambdas = {"lambda_cos": lambda_cos, "lambda_norm": lambda_norm, "lambda_ms": lambda_ms}
        self.lambda_kd, self.kd_temperature = lambda_kd, kd_temperature
        self.norm_loss = norm_loss
        self.teacher_head = None
        if lambda_kd and not online:  # layer-M state → final norm → down: the teacher's own user vector
            self.teacher_head = nn.Sequential(copy.deepcopy(teacher.final_norm()), copy.deepcopy(teacher.down))
            self.teacher_head.requires_grad_(False)
        d0, d1 = student.cfg.id_dim, student.cfg.hidden
        # Eq. 5: one per inner block; none when λ3 = 0, so no parameter goes without a gradient (DDP needs that)
        self.ms_adapters = nn.ModuleList(nn.Linear(d1, d0) for _ in (pairs[:-1] if lambda_ms else []))
        if teacher is not None and not online:
            teacher.requires_grad_(False)

    @property
    def cfg(self):
        return self.student.cfg

    def score_all(self, items: torch.Tensor) -> torch.Tensor:
        return self.student.score_all(items)

    def teacher_features(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B_blocks, batch, d1] teacher states at its block layers (and its own CE logits input when online)."""
        if self.online:
            last, states = self.teacher.hidden(items, all_layers=True)
            return states[[t - 1 for t, _ in self.pairs]], last
        self.teacher.eval()
        with torch.no_grad():
            _, states = self.teacher.hidden(items, all_layers=True)
        return states[[t - 1 for t, _ in self.pairs]], None

    def forward(self, items: torch.Tensor, targets: torch.Tensor, teacher_feats: torch.Tensor | None = None):
        last, states = self.student.hidden(items, all_layers=True)
        table = self.student.id_table
        s_user = self.student.down(last.to(self.student.down.weight.dtype))
        ce = next_item_ce(s_user, table, targets)
        student_feats = states[[s - 1 for _, s in self.pairs]]
        teacher_last = None
        if teacher_feats is None:
            teacher_feats, teacher_last = self.teacher_features(items)
        teacher_feats = teacher_feats.detach().to(student_feats.dtype)
        zero = ce.new_zeros(())
        cos = d_cos(student_feats, teacher_feats) if self.lambdas["lambda_cos"] else zero
        norm = d_norm(student_feats, teacher_feats, self.norm_loss) if self.lambdas["lambda_norm"] else zero
        ms = zero
        if self.lambdas["lambda_ms"] and self.ms_adapters:
            norm_fn = self.student.final_norm()
            users = [ad(norm_fn(student_feats[k]).to(ad.weight.dtype)) for k, ad in enumerate(self.ms_adapters)]
            ms = l_ms(users, table, targets)
        t_user = None
        if teacher_last is not None:  # online: the co-trained teacher's user vector, for its CE and L_kd's target
            t_user = self.teacher.down(teacher_last.to(self.teacher.down.weight.dtype))
        kd = zero
        if self.lambda_kd:
            if t_user is None:
                head = self.teacher_head
                t_user = head(teacher_feats[-1].to(head[1].weight.dtype))
            kd = l_kd(item_logits(s_user, table), item_logits(t_user, table), self.kd_temperature)  # target detached
        loss = total_loss(ce, cos, norm, ms, kd=kd, lambda_kd=self.lambda_kd, **self.lambdas)
        terms = {"ce": ce.detach(), "d_cos": cos.detach(), "d_norm": norm.detach(), "l_ms": ms.detach()}
        if self.lambda_kd:
            terms["l_kd"] = kd.detach()
        if teacher_last is not None:  # online: the teacher learns the task too
            t_ce = next_item_ce(t_user, table, targets)
            loss = loss + t_ce
            terms["teacher_ce"] = t_ce.detach()
        return loss, terms
