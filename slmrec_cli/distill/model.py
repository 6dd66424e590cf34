"""The student, its multi-supervision adapters and the teacher in one module, so one engine trains it."""

from __future__ import annotations

import copy

import torch
from torch import nn

from slmrec_cli.distill.losses import d_cos, d_norm, item_logits, l_kd, l_ms, next_item_ce, total_loss
from slmrec_cli.models.llmrec import LLMRec

ALIGN = ("last", "all")


class Distiller(nn.Module):
    """forward(items, targets[, teacher_feats]) → (loss, terms). Offline: the teacher is frozen and runs without
    grad (or its block features come from a cache). Online (RQ4): the teacher trains too, with its own CE; the
    alignment terms never push gradients into it.

    With causal targets ([batch, T]) the CE scores every real history slot; the alignment terms (D_cos, D_norm, L_ms,
    L_kd) read either the last slot only (align="last": the paper's last-token states) or every real slot
    (align="all"). With last/all targets ([batch]) there is one position, the last.

    With lambda_kd > 0 the student also matches the teacher's next-item distribution (L_kd, beyond the paper). The
    teacher's scores come from its last block feature (its layer M): a frozen copy of its final norm and
    down-projection, kept in `teacher_head`, turns that state into its user vector, so a feature cache serves L_kd
    too and the teacher itself can be dropped."""

    def __init__(self, student: LLMRec, teacher: LLMRec | None, pairs: list[tuple[int, int]], *, lambda_cos: float,
                 lambda_norm: float, lambda_ms: float, norm_loss: str, online: bool, lambda_kd: float = 0.0,
                 kd_temperature: float = 1.0, align: str = "last"):
        super().__init__()
        self.student, self.teacher, self.pairs, self.online = student, teacher, pairs, online
        self.lambdas = {"lambda_cos": lambda_cos, "lambda_norm": lambda_norm, "lambda_ms": lambda_ms}
        self.lambda_kd, self.kd_temperature = lambda_kd, kd_temperature
        self.norm_loss, self.align = norm_loss, align
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

    def teacher_features(self, items: torch.Tensor, positions: str = "last"):
        """(teacher states at its block layers, [B_blocks, batch, d1] or with positions="history" [B_blocks, batch,
        T, d1]; its final states at the same positions when online, else None)."""
        sel = [t - 1 for t, _ in self.pairs]
        if self.online:
            final, states = self.teacher.hidden(items, all_layers=True, positions=positions)
            return states[sel], final
        self.teacher.eval()
        with torch.no_grad():
            _, states = self.teacher.hidden(items, all_layers=True, positions=positions)
        return states[sel], None

    def cached_positions(self, dense: bool) -> str:
        """Where the offline teacher's features are read (and cached): every slot only for align="all"."""
        return "history" if dense and self.align == "all" else "last"

    def forward(self, items: torch.Tensor, targets: torch.Tensor, teacher_feats: torch.Tensor | None = None):
        dense = targets.ndim == 2
        table, down = self.student.id_table, self.student.down
        final, states = self.student.hidden(items, all_layers=True, positions="history" if dense else "last")
        if dense:
            targets = targets[:, -final.shape[1] :]
            keep = targets != 0

        def aligned(x: torch.Tensor, slots: bool) -> torch.Tensor:
            """States the alignment terms read: x [..., batch, T, d] (slots) → every real slot [..., K, d] or the
            last [..., batch, d]; x without slots is already one position per example."""
            if not slots:
                return x
            return x[..., keep, :] if self.align == "all" else x[..., -1, :]

        s_users = down((final[keep] if dense else final).to(down.weight.dtype))
        ce = next_item_ce(s_users, table, targets[keep] if dense else targets)
        align_targets = targets[keep] if dense and self.align == "all" else targets[:, -1] if dense else targets
        student_feats = aligned(states[[s - 1 for _, s in self.pairs]], dense)
        teacher_final = None
        if teacher_feats is None:
            positions = "history" if dense and self.online else self.cached_positions(dense)
            teacher_feats, teacher_final = self.teacher_features(items, positions)
        teacher_feats = aligned(teacher_feats, teacher_feats.dim() == 4).detach().to(student_feats.dtype)
        zero = ce.new_zeros(())
        cos = d_cos(student_feats, teacher_feats) if self.lambdas["lambda_cos"] else zero
        norm = d_norm(student_feats, teacher_feats, self.norm_loss) if self.lambdas["lambda_norm"] else zero
        ms = zero
        if self.lambdas["lambda_ms"] and self.ms_adapters:
            norm_fn = self.student.final_norm()
            users = [ad(norm_fn(student_feats[k]).to(ad.weight.dtype)) for k, ad in enumerate(self.ms_adapters)]
            ms = l_ms(users, table, align_targets)
        kd = zero
        if self.lambda_kd:
            if teacher_final is not None:  # online: the co-trained teacher's own user vectors (target detached)
                t_final = aligned(teacher_final, teacher_final.dim() == 3)
                t_users = self.teacher.down(t_final.to(self.teacher.down.weight.dtype))
            else:
                t_users = self.teacher_head(teacher_feats[-1].to(self.teacher_head[1].weight.dtype))
            s_kd = down(final[:, -1].to(down.weight.dtype)) if dense and self.align == "last" else s_users
            kd = l_kd(item_logits(s_kd, table), item_logits(t_users, table), self.kd_temperature)
        loss = total_loss(ce, cos, norm, ms, kd=kd, lambda_kd=self.lambda_kd, **self.lambdas)
        terms = {"ce": ce.detach(), "d_cos": cos.detach(), "d_norm": norm.detach(), "l_ms": ms.detach()}
        if self.lambda_kd:
            terms["l_kd"] = kd.detach()
        if teacher_final is not None:  # online: the teacher learns the task too, from the same targets
            t_states = teacher_final[keep] if dense else teacher_final
            t_ce = next_item_ce(self.teacher.down(t_states.to(self.teacher.down.weight.dtype)), table,
                                targets[keep] if dense else targets)
            loss = loss + t_ce
            terms["teacher_ce"] = t_ce.detach()
        return loss, terms
