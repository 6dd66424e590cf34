"""How a training stage trains (config.json's "train", each stage with its defaults), where it writes its run, and
how an LLM stage runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from slmrec_cli.config.fields import OPT, RUN, check_choice, check_eval_batch, opt, with_defaults
from slmrec_cli.errors import SlmrecError

PRECISIONS = ("auto", "no", "bf16", "fp16")


@dataclass
class TrainArgs:
    epochs: int = opt("Maximum epochs.", 200, panel=OPT)
    batch_size: int = opt("Training examples per batch, per process (effective batch = this x --grad-accum x "
                          "processes).", 128, panel=OPT)
    lr: float = opt("Peak learning rate (AdamW).", 1e-3, panel=OPT)
    weight_decay: float = opt("AdamW weight decay.", 0.0, panel=OPT)
    warmup_ratio: float = opt("Fraction of steps of linear warm-up before the cosine decay.", 0.02, panel=OPT)
    grad_clip: float = opt("Max gradient norm (0 = off).", 1.0, panel=OPT)
    grad_accum: int = opt("Micro-batches per optimizer step.", 1, panel=OPT)
    eval_every: int = opt("Validate every N optimizer steps (0 = every epoch).", 0, panel=OPT)
    max_steps: int = opt("Stop after this many optimizer steps; the learning-rate schedule ends there too (0 = no "
                         "cap: --epochs decides).", 0, panel=OPT)
    patience: int = opt("Stop after this many validations without a better valid MRR.", 10, panel=OPT)
    seed: int = opt("Seed for init, data order and dropout.", 42, panel=OPT)
    group_by_length: bool = opt("Batch training examples of similar length together (as Hugging Face's "
                                "group_by_length): groups of 50 batches are sorted by length, the batches then "
                                "shuffled; less padding per batch, order still a pure function of --seed.", False,
                                panel=OPT)
    mixed_precision: str = opt("auto (bf16 on CUDA; on a CPU with AVX-512 BF16 or AMX, bf16 for the LLM stages; "
                               "else fp32) | no | bf16 (CUDA, or a CPU with AVX-512 BF16 or AMX) | fp16 (CUDA).",
                               "auto", panel=RUN, choices=PRECISIONS)
    deterministic: bool = opt("Deterministic kernels only (torch.use_deterministic_algorithms, cuBLAS's fixed "
                              "workspace, the math attention kernel on CUDA): on a GPU a resumed run then repeats the "
                              "uninterrupted one bit for bit, at some speed (docs/reliability.md). The CPU is "
                              "deterministic without it.", False, panel=RUN)
    log_every: int = opt("Optimizer steps between training-loss log lines.", 20, cli=False)
    log_with: str | None = opt("Also log through an accelerate tracker (tensorboard).", None, panel=RUN)

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise SlmrecError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise SlmrecError(f"--lr must be positive, got {self.lr}")
        if not 0 <= self.warmup_ratio < 1:
            raise SlmrecError(f"--warmup-ratio must be in [0, 1), got {self.warmup_ratio}")
        if self.max_steps < 0:
            raise SlmrecError(f"--max-steps must be 0 (no cap) or positive, got {self.max_steps}")
        if self.patience < 1:
            raise SlmrecError(f"--patience must be at least 1, got {self.patience}")
        check_choice(self.mixed_precision, PRECISIONS, "--mixed-precision")


if TYPE_CHECKING:  # to a type checker both are TrainArgs (they differ only by their defaults)
    SASRecTrain = TrainArgs
    LLMTrain = TrainArgs
else:
    SASRecTrain = with_defaults(TrainArgs, "SASRecTrain",
                                "SASRec's training (`pretrain-ids`): the TrainArgs defaults.")
    LLMTrain = with_defaults(TrainArgs, "LLMTrain", "The LLM stages' training (`train-teacher`, `distill`).",
                             epochs=10, batch_size=32, warmup_ratio=0.05, patience=3)


@dataclass
class RunOptions:
    """Where a training stage writes its run, and what to do when something is already there."""

    out: Path = opt("Run directory to write.")
    resume: bool = opt("Continue the run in --out from its last checkpoint.", False, panel=RUN)
    force: bool = opt("Replace an existing run in --out.", False, panel=RUN)


@dataclass
class LLMRunOptions:
    """How an LLM stage runs: memory savers and the evaluation batch."""

    eval_batch: int = opt("Users per evaluation batch.", 32, panel=RUN)
    gradient_checkpointing: bool = opt("Recompute each decoder layer's activations in the backward pass: less "
                                       "memory, about a third more compute (docs/scaling.md).", False, panel=RUN,
                                       decls=("--gradient-checkpointing",))

    def __post_init__(self) -> None:
        check_eval_batch(self.eval_batch)
