"""Option types shared by the training stages (one place for names and help; defaults stay per stage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

OPT = "Optimisation"
RUN = "Run"
LORA = "LoRA"

Data = Annotated[Path, typer.Option(help="Dataset directory from `slmrec prepare`.")]
Out = Annotated[Path, typer.Option(help="Run directory to write.")]
Epochs = Annotated[int, typer.Option(help="Maximum epochs.", rich_help_panel=OPT)]
BatchSize = Annotated[int, typer.Option(help="Training examples per batch, per process (effective batch = this x "
                                             "--grad-accum x processes).", rich_help_panel=OPT)]
Lr = Annotated[float, typer.Option(help="Peak learning rate (AdamW).", rich_help_panel=OPT)]
WeightDecay = Annotated[float, typer.Option(help="AdamW weight decay.", rich_help_panel=OPT)]
WarmupRatio = Annotated[float, typer.Option(help="Fraction of steps of linear warm-up before the cosine decay.",
                                            rich_help_panel=OPT)]
GradClip = Annotated[float, typer.Option(help="Max gradient norm (0 = off).", rich_help_panel=OPT)]
GradAccum = Annotated[int, typer.Option(help="Micro-batches per optimizer step.", rich_help_panel=OPT)]
Patience = Annotated[int, typer.Option(help="Stop after this many validations without a better valid MRR.",
                                       rich_help_panel=OPT)]
EvalEvery = Annotated[int, typer.Option(help="Validate every N optimizer steps (0 = every epoch).",
                                        rich_help_panel=OPT)]
MaxSteps = Annotated[int, typer.Option(help="Stop after this many optimizer steps; the learning-rate schedule ends "
                                            "there too (0 = no cap: --epochs decides).", rich_help_panel=OPT)]
Seed = Annotated[int, typer.Option(help="Seed for init, data order and dropout.", rich_help_panel=OPT)]
MixedPrecision = Annotated[str, typer.Option(help="auto (bf16 on CUDA, fp32 on CPU) | no | bf16 (CUDA, or a CPU "
                                                  "with AVX-512 BF16 or AMX) | fp16 (CUDA).",
                                             rich_help_panel=RUN)]
LogWith = Annotated[str | None, typer.Option(help="Also log through an accelerate tracker (tensorboard).",
                                             rich_help_panel=RUN)]
Resume = Annotated[bool, typer.Option(help="Continue the run in --out from its last checkpoint.",
                                      rich_help_panel=RUN)]
Force = Annotated[bool, typer.Option(help="Replace an existing run in --out.", rich_help_panel=RUN)]
EvalBatch = Annotated[int, typer.Option(help="Users per evaluation batch.", rich_help_panel=RUN)]

BaseModel = Annotated[str, typer.Option(help="smollm2-135m | tiny-random | a local HF model folder | a .gguf file.")]
Layers = Annotated[int, typer.Option(help="Keep the first N decoder layers of the base model.")]
MaxLen = Annotated[int, typer.Option(help="Most recent items the model reads.")]
Targets = Annotated[str, typer.Option(help="causal: the max-length windows of each training history, every item a "
                                           "target from one causal forward (as SASRec); last: one example per user "
                                           "(official SLMRec code); all: every prefix as its own example.")]
Prompt = Annotated[str | None, typer.Option(help="items (default: the history alone) | instruction (slmrec's "
                                                 "question after the history; targets last or all) | a template with "
                                                 "one '{history}' where the items go.")]
LoraR = Annotated[int, typer.Option(help="LoRA rank.", rich_help_panel=LORA)]
LoraAlpha = Annotated[int, typer.Option(help="LoRA alpha.", rich_help_panel=LORA)]
LoraDropout = Annotated[float, typer.Option(help="LoRA dropout.", rich_help_panel=LORA)]
LoraTargets = Annotated[str, typer.Option(help="Comma-separated module names that get LoRA.", rich_help_panel=LORA)]
GradientCheckpointing = Annotated[bool, typer.Option("--gradient-checkpointing", help="Recompute each decoder "
                                                     "layer's activations in the backward pass: less memory, about "
                                                     "a third more compute (docs/scaling.md).", rich_help_panel=RUN)]
LoadIn8bit = Annotated[bool, typer.Option("--load-in-8bit", help="Load the base model in 8-bit (bitsandbytes, "
                                          "CUDA).", rich_help_panel=RUN)]
LoadIn4bit = Annotated[bool, typer.Option("--load-in-4bit", help="Load the base model in 4-bit NF4 "
                                          "(bitsandbytes, CUDA).", rich_help_panel=RUN)]


def train_args(values: dict):
    """TrainArgs from a command's option values (its locals()); validated in TrainArgs itself."""
    from dataclasses import fields

    from slmrec_cli.train.engine import TrainArgs

    return TrainArgs(**{f.name: values[f.name] for f in fields(TrainArgs) if f.name in values})
