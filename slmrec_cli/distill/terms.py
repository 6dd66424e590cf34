"""The distillation's loss terms, each declared once. The student's loss is CE + Σ λ·loss(value) over TERMS (Eq. 6,
and L_kd beyond the paper); a term whose λ is 0 is never computed.

An entry holds everything about its term: its name (the training log's key and the report's label), its λ option
(DistillOptions gains the field, and the CLI its --lambda-... option, from here), whether it reads the teacher (with
every such term off, the teacher is neither loaded nor cached), whether it is one of the paper's terms (the report's
"all three"), its value and how that value enters the loss. A new term is one entry here plus its function in
distill/losses.py. This module imports no torch: the CLI reads it at start-up; the values import what they use."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


def _same(value: Any) -> Any:
    return value


@dataclass(frozen=True)
class Term:
    name: str  # the training log's key, the report's label
    weight: str  # its λ: the DistillOptions field (and --lambda-... option) that weighs it; 0 = off
    default: float  # the λ's default
    help: str  # the λ option's help
    reads_teacher: bool  # needs the teacher's states or scores
    paper: bool  # one of Eq. 6's terms
    value: Callable[[Any, Any], Any]  # (Distiller, Aligned) → a scalar tensor
    loss: Callable[[Any], Any] = _same  # how the value enters the loss


def _d_cos(m, a):
    from slmrec_cli.distill.losses import d_cos

    return d_cos(a.student, a.teacher)


def _d_norm(m, a):
    from slmrec_cli.distill.losses import d_norm

    return d_norm(a.student, a.teacher, m.opts.norm_loss)


def _l_ms(m, a):
    return m.multi_supervision(a)


def _l_kd(m, a):
    from slmrec_cli.distill.losses import l_kd_items

    return l_kd_items(a.student_users(), a.teacher_users(), m.student.id_table, m.opts.kd_temperature)


TERMS = (  # Eq. 6: CE + λ1(1 − D_cos) + λ2 D_norm + λ3 L_ms; beyond the paper, + λ_kd L_kd
    Term("d_cos", "lambda_cos", 1.0, "λ1 of (1 − D_cos), Eq. 3 (0 = off).", reads_teacher=True, paper=True,
         value=_d_cos, loss=lambda v: 1 - v),
    Term("d_norm", "lambda_norm", 0.1, "λ2 of D_norm, Eq. 4 (0 = off).", reads_teacher=True, paper=True,
         value=_d_norm),
    Term("l_ms", "lambda_ms", 0.1, "λ3 of L_ms, Eq. 5 (0 = off; the paper uses 1, 0.1 or 0.01 by dataset; 0.1 beat 1 "
         "on ml-1m and tied it on ml-100k: docs/findings.md).", reads_teacher=False, paper=True, value=_l_ms),
    Term("l_kd", "lambda_kd", 0.0, "Weight of L_kd, the KL from the teacher's next-item distribution (not in the "
         "paper; 0 = off).", reads_teacher=True, paper=False, value=_l_kd),
)
L_MS, L_KD = TERMS[2], TERMS[3]  # for the code that treats these apart (L_ms's adapters, L_kd's teacher head)
PAPER_TERMS = tuple(t for t in TERMS if t.paper)
