"""The distillation's options (config.json's "distill", with what the stage derives from the teacher)."""

from __future__ import annotations

from dataclasses import dataclass

from slmrec_cli.config.fields import check_choice, opt
from slmrec_cli.errors import SlmrecError

NORM_LOSSES = ("squared", "l2", "normalized")
ALIGN = ("last", "all")
MODES = ("offline", "online")
INIT_PROJECTIONS = ("fresh", "teacher")


@dataclass
class DistillOptions:
    student_layers: int = opt("N: the student keeps the base model's first N layers.", 4)
    blocks: int = opt("B: align teacher layer k·M/B with student layer k·N/B, k=1..B.", 4)
    lambda_cos: float = opt("λ1 of (1 − D_cos), Eq. 3 (0 = off).", 1.0)
    lambda_norm: float = opt("λ2 of D_norm, Eq. 4 (0 = off).", 0.1)
    lambda_ms: float = opt("λ3 of L_ms, Eq. 5 (0 = off; the paper uses 1, 0.1 or 0.01 by dataset; 0.1 beat 1 on "
                           "ml-1m and tied it on ml-100k: docs/findings.md).", 0.1)
    norm_loss: str = opt("D_norm as squared (Eq. 4) | l2 | normalized (by the teacher's norm).", "normalized",
                         choices=NORM_LOSSES)
    lambda_kd: float = opt("Weight of L_kd, the KL from the teacher's next-item distribution (not in the paper; "
                           "0 = off).", 0.0)
    kd_temperature: float = opt("τ that softens both distributions in L_kd.", 1.0)
    align: str = opt("With --targets causal, where D_cos, D_norm, L_ms and L_kd read the states: last (the last "
                     "position, as the paper) | all (every real position).", "last", choices=ALIGN)
    mode: str = opt("offline: frozen trained teacher; online: teacher and student trained together from the base "
                    "model (RQ4).", "offline", choices=MODES)
    init_projections: str = opt("fresh | teacher (copy the teacher's up/down projections).", "fresh",
                                choices=INIT_PROJECTIONS)

    def __post_init__(self) -> None:
        for name in ("lambda_cos", "lambda_norm", "lambda_ms", "lambda_kd"):
            if getattr(self, name) < 0:
                raise SlmrecError(f"--{name.replace('_', '-')} must be ≥ 0 (0 switches the term off), got "
                                  f"{getattr(self, name)}")
        if not self.kd_temperature > 0:
            raise SlmrecError(f"--kd-temperature must be > 0, got {self.kd_temperature}")
        for name, allowed in (("norm_loss", NORM_LOSSES), ("align", ALIGN), ("mode", MODES),
                              ("init_projections", INIT_PROJECTIONS)):
            check_choice(getattr(self, name), allowed, f"--{name.replace('_', '-')}")

    @classmethod
    def from_record(cls, section: dict) -> DistillOptions:
        """A run's recorded options; keys it lacks (written before they existed) take their defaults."""
        from dataclasses import fields

        return cls(**{f.name: section[f.name] for f in fields(cls) if f.name in section})
