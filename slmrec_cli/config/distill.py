"""The distillation's options (config.json's "distill", with what the stage derives from the teacher)."""

from __future__ import annotations

from dataclasses import dataclass

from slmrec_cli.config.fields import check_choice, opt
from slmrec_cli.distill.terms import TERMS, Term
from slmrec_cli.errors import SlmrecError

NORM_LOSSES = ("squared", "l2", "normalized")
ALIGN = ("last", "all")
MODES = ("offline", "online")
FROM_TEACHER = "teacher"  # --init-projections: copy the trained teacher's up/down projections
INIT_PROJECTIONS = ("fresh", FROM_TEACHER)


def with_term_weights(cls: type) -> type:
    """Give the options one λ field per loss term (distill/terms.py: its name, default and help live there), before
    the dataclass is built, so a new term needs no edit here."""
    for term in TERMS:
        cls.__annotations__[term.weight] = "float"
        setattr(cls, term.weight, opt(term.help, term.default))
    return cls


@dataclass
@with_term_weights
class DistillOptions:
    """The student's distillation; its λ fields (lambda_cos, lambda_norm, lambda_ms, lambda_kd) come from TERMS."""

    student_layers: int = opt("N: the student keeps the base model's first N layers.", 4)
    blocks: int = opt("B: align teacher layer k·M/B with student layer k·N/B, k=1..B.", 4)
    norm_loss: str = opt("D_norm as squared (Eq. 4) | l2 | normalized (by the teacher's norm).", "normalized",
                         choices=NORM_LOSSES)
    kd_temperature: float = opt("τ that softens both distributions in L_kd.", 1.0)
    align: str = opt("With --targets causal, where D_cos, D_norm, L_ms and L_kd read the states: last (the last "
                     "position, as the paper) | all (every real position).", "last", choices=ALIGN)
    mode: str = opt("offline: frozen trained teacher; online: teacher and student trained together from the base "
                    "model (RQ4).", "offline", choices=MODES)
    init_projections: str = opt("fresh | teacher (copy the teacher's up/down projections).", "fresh",
                                choices=INIT_PROJECTIONS)

    def weight(self, term: Term) -> float:
        """The λ of a loss term (0 = off)."""
        return getattr(self, term.weight)

    @property
    def needs_teacher(self) -> bool:
        """Whether any term reads the teacher, or it trains alongside (online). With none, the teacher is neither
        loaded nor cached (L_ms reads only the student)."""
        return self.mode == "online" or any(self.weight(t) for t in TERMS if t.reads_teacher)

    def __post_init__(self) -> None:
        for term in TERMS:
            if self.weight(term) < 0:
                raise SlmrecError(f"--{term.weight.replace('_', '-')} must be ≥ 0 (0 switches the term off), got "
                                  f"{self.weight(term)}")
        if not self.kd_temperature > 0:
            raise SlmrecError(f"--kd-temperature must be > 0, got {self.kd_temperature}")
        for name, allowed in (("norm_loss", NORM_LOSSES), ("align", ALIGN), ("mode", MODES),
                              ("init_projections", INIT_PROJECTIONS)):
            check_choice(getattr(self, name), allowed, f"--{name.replace('_', '-')}")
