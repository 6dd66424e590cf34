"""The student, its multi-supervision adapters and the teacher in one module, so one engine trains it. Its loss is
the next-item CE plus the weighted terms of distill/terms.py."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from slmrec_cli.config.distill import DistillOptions
from slmrec_cli.distill.losses import l_ms
from slmrec_cli.distill.terms import L_KD, L_MS, TERMS
from slmrec_cli.models.llmrec import LLMRec
from slmrec_cli.models.scoring import next_item_ce


@dataclass
class Aligned:
    """What the terms read from one batch: student and teacher block states at the aligned positions [B, K, d],
    the targets there [K], and the student's and teacher's user vectors for L_kd."""

    student: torch.Tensor
    teacher: torch.Tensor
    targets: torch.Tensor
    student_users: Callable[[], torch.Tensor]
    teacher_users: Callable[[], torch.Tensor]


def cached_positions(opts: DistillOptions, causal: bool) -> str:
    """Where the offline teacher's features are read (and cached): every slot only for align="all" (causal targets)."""
    return "history" if causal and opts.align == "all" else "last"


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
        if opts.weight(L_KD) and not self.online:  # layer-M state → final norm → down: the teacher's own user vector
            # the final norm is the base model's (LoRA never touches it), the same in teacher and student; the
            # teacher's down-projection comes from the teacher, or from its run when only its cache is at hand
            down = teacher_down if teacher_down is not None else teacher.down
            self.teacher_head = nn.Sequential(copy.deepcopy(student.final_norm()), copy.deepcopy(down))
            self.teacher_head.requires_grad_(False)
        d0, d1 = student.cfg.id_dim, student.cfg.hidden
        # Eq. 5: one per inner block; none when λ3 = 0, so no parameter goes without a gradient (DDP needs that)
        self.ms_adapters = nn.ModuleList(nn.Linear(d1, d0) for _ in (pairs[:-1] if opts.weight(L_MS) else []))
        if teacher is not None and not self.online:
            teacher.requires_grad_(False)

    @property
    def cfg(self):
        return self.student.cfg

    def describe(self) -> str:
        on = [f"{t.weight}={self.opts.weight(t):g}" for t in TERMS if self.opts.weight(t)]
        kd = f", τ={self.opts.kd_temperature:g}" if self.opts.weight(L_KD) else ""
        return f"CE + {', '.join(on) or 'nothing else'}{kd}, norm loss {self.opts.norm_loss}"

    def teacher_features(self, items: torch.Tensor, positions: str = "last"):
        """(teacher states at its block layers, [blocks, batch, d1] or with positions="history" [blocks, batch, T,
        d1]; its final states at the same positions when online, else None)."""
        if self.online:
            final, states = self.teacher.hidden(items, all_layers=True, positions=positions)
            return states[[t - 1 for t, _ in self.pairs]], final
        return block_states(self.teacher, items, self.pairs, positions), None

    def cached_positions(self, causal: bool) -> str:
        return cached_positions(self.opts, causal)

    def multi_supervision(self, a: Aligned) -> torch.Tensor:
        """L_ms: each inner block's state through the final norm and its own adapter, scored like the output."""
        norm = self.student.final_norm()
        users = [ad(norm(a.student[k]).to(ad.weight.dtype)) for k, ad in enumerate(self.ms_adapters)]
        return l_ms(users, self.student.id_table, a.targets)

    def forward(self, items: torch.Tensor, targets: torch.Tensor, teacher_feats: torch.Tensor | None = None):
        causal = targets.ndim == 2
        final, states = self.student.hidden(items, all_layers=True, positions="history" if causal else "last")
        if causal:
            targets = targets[:, -final.shape[1] :]
        slots = Slots(causal, causal and self.opts.align == "all", targets != 0 if causal else None)
        table, down = self.student.id_table, self.student.down
        s_users = project(down, slots.real(final))
        ce = next_item_ce(s_users, table, slots.real(targets))
        teacher_final = None
        if teacher_feats is None and self.teacher is not None:
            positions = "history" if causal and self.online else self.cached_positions(causal)
            teacher_feats, teacher_final = self.teacher_features(items, positions)
        student_feats = slots.aligned(states[[s - 1 for _, s in self.pairs]], causal)
        if teacher_feats is not None:  # None: no term reads the teacher (needs_teacher), so none was loaded
            teacher_feats = slots.aligned(teacher_feats, teacher_feats.dim() == 4).detach().to(student_feats.dtype)
        a = Aligned(student_feats, teacher_feats, targets=slots.aligned_targets(targets),
                    student_users=partial(self._student_users, final, s_users, slots),
                    teacher_users=partial(self._teacher_users, teacher_feats, teacher_final, slots))
        loss, terms = self._weighted_terms(ce, a)
        if teacher_final is not None:  # online: the teacher learns the task too, from the same targets
            t_ce = next_item_ce(project(self.teacher.down, slots.real(teacher_final)), table, slots.real(targets))
            loss = loss + t_ce
            terms["teacher_ce"] = t_ce.detach()
        return loss, terms

    def _weighted_terms(self, ce: torch.Tensor, a: Aligned) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """CE + Σ λ·loss(value) over TERMS, and each value for the log (0 for a term that is off: never computed,
        so it adds no gradient)."""
        loss, terms = ce, {"ce": ce.detach()}
        for term in TERMS:
            weight = self.opts.weight(term)
            if not weight:
                terms[term.name] = ce.new_zeros(())
                continue
            value = term.value(self, a)
            loss = loss + weight * term.loss(value)
            terms[term.name] = value.detach()
        return loss, terms

    def _student_users(self, final: torch.Tensor, real_users: torch.Tensor, slots: Slots) -> torch.Tensor:
        """The student's user vectors where the terms read: the last slot, or every real slot (already computed)."""
        if slots.causal and not slots.every:
            return project(self.student.down, final[:, -1])
        return real_users

    def _teacher_users(self, feats: torch.Tensor, final: torch.Tensor | None, slots: Slots) -> torch.Tensor:
        """The teacher's user vectors where the terms read: online, from the co-trained teacher's own final states;
        offline, from its last block feature through the frozen teacher head."""
        if final is not None:
            return project(self.teacher.down, slots.aligned(final, final.dim() == 3))
        return self.teacher_head(feats[-1].to(self.teacher_head[1].weight.dtype))


@dataclass(frozen=True)
class Slots:
    """Where one batch's losses read. Causal targets ([batch, T]): the CE scores every real slot (`keep`), and the
    terms read the last slot, or every real slot with align="all" (`every`). Last/all targets ([batch]): one
    position per example."""

    causal: bool
    every: bool
    keep: torch.Tensor | None  # [batch, T], real slots (causal targets only)

    def real(self, x: torch.Tensor) -> torch.Tensor:
        """x [batch, T, ...] → its real slots [K, ...] (causal); else x as it is."""
        return x[self.keep] if self.causal else x

    def aligned(self, x: torch.Tensor, has_slots: bool) -> torch.Tensor:
        """States x [..., batch, T, d] → every real slot [..., K, d] or the last [..., batch, d]; x without slots is
        already one position per example."""
        if not has_slots:
            return x
        return x[..., self.keep, :] if self.every else x[..., -1, :]

    def aligned_targets(self, targets: torch.Tensor) -> torch.Tensor:
        """The targets where the terms read (as `aligned`)."""
        if not self.causal:
            return targets
        return targets[self.keep] if self.every else targets[:, -1]


def project(layer: nn.Linear, states: torch.Tensor) -> torch.Tensor:
    """States through a projection, in the projection's dtype (autocast or a bf16 base may hand over another)."""
    return layer(states.to(layer.weight.dtype))
