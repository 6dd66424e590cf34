"""The configs of the commands that score runs: `evaluate` and `prune-probe`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slmrec_cli.config.fields import RUN, check_choice, check_device, check_eval_batch, device_opt, opt
from slmrec_cli.errors import SlmrecError

PROTOCOLS = ("sampled", "full")
QUANTIZATIONS = ("run", "none", "8bit", "4bit")  # = runs.QUANTIZATIONS (config modules import no runtime code)
SPLITS = ("valid", "test")
DEVICE_HELP = ("Where the models run: auto (the first CUDA GPU when one is visible, else the CPU) | cpu | cuda | "
               "cuda:N. Under torchrun / accelerate launch each process uses its own GPU.")


def protocols_of(protocol: str) -> tuple[str, ...]:
    if protocol == "both":
        return PROTOCOLS
    if protocol not in PROTOCOLS:
        raise SlmrecError(f"--protocol must be sampled, full or both, got '{protocol}'")
    return (protocol,)


@dataclass
class EvaluateConfig:
    """Score runs on a split by the evaluation protocol (docs/protocol.md) and write RUN/eval/<split>-<protocol>.json;
    one table for all."""

    runs: list[Path] | None = opt("Run directories to score.", None, argument=True)
    split: str = opt("Which held-out item to score.", "test", choices=SPLITS)
    protocol: str = opt("sampled: the target among the fixed negatives; full: among every item; both.", "both",
                        choices=(*PROTOCOLS, "both"))
    data: Path | None = opt("Dataset directory (default: the one each run was trained on).", None)
    popularity: bool = opt("Also score the most-popular-in-training baseline (needs --data when no run is given).",
                           False)
    mask_history: bool = opt("Full protocol: exclude the input history from the ranking.", True)
    eval_batch: int = opt("Users per evaluation batch.", 256, panel=RUN, aliases=("--batch-size",))
    device: str = device_opt(DEVICE_HELP)
    reuse: bool = opt("Reuse a run's existing metrics files when they were made on the same data with the same "
                      "options (score only what is missing).", False)
    quantization: str = opt("How LLM runs' base models load: run (as each trained: an 8-bit or 4-bit run stays so) | "
                            "none | 8bit | 4bit (bitsandbytes). Another than the run's own is recorded in the output "
                            "and writes no metrics file into the run.", "run", choices=QUANTIZATIONS, panel=RUN)

    def __post_init__(self) -> None:
        check_choice(self.split, SPLITS, "--split")
        protocols_of(self.protocol)
        if not self.runs and not self.popularity:
            raise SlmrecError("nothing to evaluate; give one or more RUN directories, or --popularity --data DIR")
        if self.popularity and not self.runs and self.data is None:
            raise SlmrecError("--popularity needs --data DIR (or a run whose dataset it can use)")
        check_eval_batch(self.eval_batch)
        check_device(self.device)
        check_choice(self.quantization, QUANTIZATIONS, "--quantization")


@dataclass
class ProbeConfig:
    """Score a trained LLM run's last-token state after each layer, through its own down-projection (no training)."""

    run: Path = opt("A trained teacher (or student) run.", argument=True)
    split: str = opt("Which held-out item to score.", "test", choices=SPLITS)
    layers: str | None = opt("Comma-separated layers to read, e.g. 1,2,8 (default: every layer).", None)
    final_norm: bool = opt("Apply the model's final norm before the down-projection.", True)
    baseline: Path | None = opt("A run whose eval file is drawn as a line (e.g. SASRec).", None)
    eval_batch: int = opt("Users per evaluation batch.", 32, panel=RUN, aliases=("--batch-size",))
    device: str = device_opt(DEVICE_HELP)

    def __post_init__(self) -> None:
        check_choice(self.split, SPLITS, "--split")
        check_eval_batch(self.eval_batch)
        check_device(self.device)
