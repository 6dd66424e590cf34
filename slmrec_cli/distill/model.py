"""The student, its multi-supervision adapters and the teacher in one module, so one engine trains it. Its loss is
the next-item CE plus the weighted parts listed in PARTS."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from slmrec_cli.config.distill import DistillOptions
from slmrec_cli.distill.losses import d_cos, d_norm, l_kd_items, l_ms
from slmrec_cli.models.llmrec import LLMRec
from slmrec_cli.models.scoring import next_item_ce


@dataclass
class Aligned:
    """What the parts read from one batch: student and teacher block states at the aligned positions [B, K, d],
    the targets there [K], and the student's and teacher's user vectors for L_kd."""

    student: torch.Tensor
    teacher: torch.Tensor
    targets: torch.Tensor
    student_users: Callable[[], torch.Tensor]
    teacher_users: Callable[[], torch.Tensor]


@dataclass(frozen=True)
class Part:
    name: str  # the term in the training log
    weight: str  # the DistillOptions field that weighs it (0 = off: never computed)
    value: Callable[[Distiller, Aligned], torch.Tensor]
    loss: Callable[[torch.Tensor], torch.Tensor] = lambda v: v  # how the value enters the loss


PARTS = (  # Eq. 6: CE + λ1(1 − D_cos) + λ2 D_norm + λ3 L_ms; beyond the paper, + λ_kd L_kd
    Part("d_cos", "lambda_cos", lambda m, a: d_cos(a.student, a.teacher), loss=lambda v: 1 - v),
    Part("d_norm", "lambda_norm", lambda m, a: d_norm(a.student, a.teacher, m.opts.norm_loss)),
    Part("l_ms", "lambda_ms", lambda m, a: m.multi_supervision(a)),
    Part("l_kd", "lambda_kd", lambda m, a: l_kd_items(a.student_users(), a.teacher_users(), m.student.id_table,
                                                      m.opts.kd_temperature)),
)


def cached_positions(opts: DistillOptions, dense: bool) -> str:
    """Where the offline teacher's features are read (and cached): every slot only for align="all"."""
    return "history" if dense and opts.align == "all" else "last"


def block_states(teacher: LLMRec, items: torch.Tensor, pairs: list[tuple[int, int]], positions: str = "last"):
    """The frozen teacher's states at its block layers: [blocks, batch, d1] ([blocks, batch, T, d1] for
    positions="history"), what the feature cache holds."""
    teacher.eval()
    with torch.no_grad():
        _, states = teacher.hidden(items, all_layers=True, positions=positions)
    return states[[t - 1 for t, _ in pairs]]


class Distiller(nn.Module):
    """forward(items, targets[, teacher_feats]) → (loss, terms). Offline: the teacher is frozen and runs without
    grad (or its block features come from a cache). Online (RQ4): the teacher trains too, with its own CE; the
    parts never push gradients into it.

    With causal targets ([batch, T]) the CE scores every real history slot; the parts read either the last slot only
    (align="last": the paper's last-token states) or every real slot (align="all"). With last/all targets ([batch])
    there is one position, the last.

    L_kd (lambda_kd > 0) matches the teacher's next-item distribution. Offline, the teacher's scores come from its last
    block feature (its layer M): a frozen copy of its final norm and down-projection, kept in `teacher_head`, turns
    that state into its user vector, so a feature cache serves L_kd too and the teacher itself can be dropped."""

    def __init__(self, student: LLMRec, teacher: LLMRec | None, pairs: list[tuple[int, int]], opts: DistillOptions,
                 teacher_down: nn.Linear | None = None):
        super().__init__()
        self.student, self.teacher, self.pairs, self.opts = student, teacher, pairs, opts
        self.online = opts.mode == "online"
        self.teacher_head = None
        if opts.lambda_kd and not self.online:  # layer-M state → final norm → down: the teacher's own user vector
            # the final norm is the base model's (LoRA never touches it), the same in teacher and student; the
            # teacher's down-projection comes from the teacher, or from its run when only its cache is at hand
            down = teacher_down if teacher_down is not None else teacher.down
            self.teacher_head = nn.Sequential(copy.deepcopy(student.final_norm()), copy.deepcopy(down))
            self.teacher_head.requires_grad_(False)
        d0, d1 = student.cfg.id_dim, student.cfg.hidden
        # Eq. 5: one per inner block; none when λ3 = 0, so no parameter goes without a gradient (DDP needs that)
        self.ms_adapters = nn.ModuleList(nn.Linear(d1, d0) for _ in (pairs[:-1] if opts.lambda_ms else []))
        if teacher is not None and not self.online:
            teacher.requires_grad_(False)

    @property
    def cfg(self):
        return self.student.cfg

    def describe(self) -> str:
        on = [f"{p.weight}={getattr(self.opts, p.weight):g}" for p in PARTS if getattr(self.opts, p.weight)]
        kd = f", τ={self.opts.kd_temperature:g}" if self.opts.lambda_kd else ""
        return f"CE + {', '.join(on) or 'nothing else'}{kd}, norm loss {self.opts.norm_loss}"

    def teacher_features(self, items: torch.Tensor, positions: str = "last"):
        """(teacher states at its block layers, [B_blocks, batch, d1] or with positions="history" [B_blocks, batch,
        T, d1]; its final states at the same positions when online, else None)."""
        if self.online:
            final, states = self.teacher.hidden(items, all_layers=True, positions=positions)
            return states[[t - 1 for t, _ in self.pairs]], final
        return block_states(self.teacher, items, self.pairs, positions), None

    def cached_positions(self, dense: bool) -> str:
        return cached_positions(self.opts, dense)

    @staticmethod
    def needs_teacher(opts: DistillOptions) -> bool:
        """Whether any term reads the teacher: D_cos, D_norm, L_kd, or an online teacher's own CE (L_ms reads only
        the student). With none of them the teacher is neither loaded nor cached."""
        return opts.mode == "online" or bool(opts.lambda_cos or opts.lambda_norm or opts.lambda_kd)

    def multi_supervision(self, a: Aligned) -> torch.Tensor:
        """L_ms: each inner block's state through the final norm and its own adapter, scored like the output."""
        norm = self.student.final_norm()
        users = [ad(norm(a.student[k]).to(ad.weight.dtype)) for k, ad in enumerate(self.ms_adapters)]
        return l_ms(users, self.student.id_table, a.targets)

    def forward(self, items: torch.Tensor, targets: torch.Tensor, teacher_feats: torch.Tensor | None = None):
        dense = targets.ndim == 2
        every = dense and self.opts.align == "all"
        table, down = self.student.id_table, self.student.down
        final, states = self.student.hidden(items, all_layers=True, positions="history" if dense else "last")
        if dense:
            targets = targets[:, -final.shape[1] :]
            keep = targets != 0

        def aligned(x: torch.Tensor, slots: bool) -> torch.Tensor:
            """x [..., batch, T, d] (slots) → every real slot [..., K, d] or the last [..., batch, d]; x without
            slots is already one position per example."""
            if not slots:
                return x
            return x[..., keep, :] if every else x[..., -1, :]

        s_users = down((final[keep] if dense else final).to(down.weight.dtype))
        ce = next_item_ce(s_users, table, targets[keep] if dense else targets)
        teacher_final = None
        if teacher_feats is None and self.teacher is not None:
            positions = "history" if dense and self.online else self.cached_positions(dense)
            teacher_feats, teacher_final = self.teacher_features(items, positions)
        student_feats = aligned(states[[s - 1 for _, s in self.pairs]], dense)
        if teacher_feats is not None:  # None: no term reads the teacher (needs_teacher), so none was loaded
            teacher_feats = aligned(teacher_feats, teacher_feats.dim() == 4).detach().to(student_feats.dtype)

        def teacher_users() -> torch.Tensor:
            if teacher_final is not None:  # online: the co-trained teacher's own user vectors (targets detached)
                t_final = aligned(teacher_final, teacher_final.dim() == 3)
                return self.teacher.down(t_final.to(self.teacher.down.weight.dtype))
            return self.teacher_head(teacher_feats[-1].to(self.teacher_head[1].weight.dtype))

        a = Aligned(student_feats, teacher_feats,
                    targets=targets[keep] if every else targets[:, -1] if dense else targets,
                    student_users=lambda: down(final[:, -1].to(down.weight.dtype)) if dense and not every else s_users,
                    teacher_users=teacher_users)
        loss, terms = ce, {"ce": ce.detach()}
        for part in PARTS:
            weight = getattr(self.opts, part.weight)
            if not weight:  # off: not computed, so it adds no gradient (and a zero in the log)
                terms[part.name] = ce.new_zeros(())
                continue
            value = part.value(self, a)
            loss = loss + weight * part.loss(value)
            terms[part.name] = value.detach()
        if teacher_final is not None:  # online: the teacher learns the task too, from the same targets
            t_states = teacher_final[keep] if dense else teacher_final
            t_ce = next_item_ce(self.teacher.down(t_states.to(self.teacher.down.weight.dtype)), table,
                                targets[keep] if dense else targets)
            loss = loss + t_ce
            terms["teacher_ce"] = t_ce.detach()
        return loss, terms
