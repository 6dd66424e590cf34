"""Each training stage's and `report`'s whole config: the concerns it combines, and its own inputs. The training
stages' config.json holds their sections (model, train, distill) with what the stage derives."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from slmrec_cli.config.distill import DistillOptions
from slmrec_cli.config.fields import RUN, check_choice, check_eval_batch, check_one_quantization, opt, optional_path
from slmrec_cli.config.models import TARGETS, LLMRecConfig, SASRecConfig
from slmrec_cli.config.train import LLMRunOptions, LLMTrain, RunOptions, SASRecTrain
from slmrec_cli.errors import SlmrecError

TARGETS_HELP = ("causal: the max-length windows of each training history, every item a target from one causal "
                "forward (as SASRec); last: one example per user (official SLMRec code); all: every prefix as its "
                "own example.")


CACHE_DTYPES = ("bf16", "fp32")
PLACEMENT = ("Trains where accelerate puts it: a visible CUDA GPU (one per process under torchrun / accelerate "
             "launch; choose with CUDA_VISIBLE_DEVICES), else the CPU.")


def trains(cls):
    """A training stage's config: its help says where it trains (accelerate picks the device, not a --device)."""
    cls.__doc__ = f"{cls.__doc__}\n\n{PLACEMENT}"
    return cls


@trains
@dataclass
class PretrainConfig:
    """Train SASRec (full-softmax CE on every position): the classic baseline and the item-id table."""

    data: Path = opt("Dataset directory from `slmrec prepare`.")
    run: RunOptions  # type: ignore[misc]  # required: mypy reads the opt(...) above as a default; it has none
    model: SASRecConfig = field(default_factory=SASRecConfig)
    train: SASRecTrain = field(default_factory=SASRecTrain)
    eval_batch: int = opt("Users per evaluation batch.", 256, panel=RUN)

    def __post_init__(self) -> None:
        check_eval_batch(self.eval_batch)


@trains
@dataclass
class TeacherConfig:
    """Train the E4SRec-style LLM recommender (the teacher) on the first --layers layers of a base LM, with LoRA."""

    data: Path = opt("Dataset directory from `slmrec prepare`.")
    ids: Path = opt("SASRec run from `slmrec pretrain-ids` (its frozen item-id table).")
    run: RunOptions  # type: ignore[misc]  # required: mypy reads the opt(...) above as a default; it has none
    base_model: str = opt("smollm2-135m | tiny-random | a local HF model folder | a .gguf file.", "smollm2-135m")
    targets: str = opt(TARGETS_HELP, "causal", choices=TARGETS)
    model: LLMRecConfig = field(default_factory=LLMRecConfig)
    train: LLMTrain = field(default_factory=LLMTrain)
    llm: LLMRunOptions = field(default_factory=LLMRunOptions)
    load_in_8bit: bool = opt("Load the base model in 8-bit (bitsandbytes, CUDA).", False, panel=RUN,
                             decls=("--load-in-8bit",))
    load_in_4bit: bool = opt("Load the base model in 4-bit NF4 (bitsandbytes, CUDA).", False, panel=RUN,
                             decls=("--load-in-4bit",))
    random_init: bool = opt("--base-model is a folder with a LLaMA-family config.json and no weights: build it with "
                            "seeded random weights (drills at a model's shape; recorded, reports say so).", False,
                            panel=RUN, decls=("--random-init",))
    ignore_weights: bool = opt("With --random-init: go ahead although the folder holds weights (they are not "
                               "loaded).", False, panel=RUN, decls=("--ignore-weights",))

    def __post_init__(self) -> None:
        check_choice(self.targets, TARGETS, "--targets")
        if self.ignore_weights and not self.random_init:
            raise SlmrecError("--ignore-weights only goes with --random-init; drop it, or add --random-init")


@trains
@dataclass
class DistillConfig:
    """Distill an N-layer student from a trained M-layer teacher: CE + λ1(1−D_cos) + λ2·D_norm + λ3·L_ms."""

    teacher: Path = opt("A teacher run from `slmrec train-teacher`.")
    run: RunOptions  # type: ignore[misc]  # required: mypy reads the opt(...) above as a default; it has none
    distill: DistillOptions = field(default_factory=DistillOptions)
    teacher_cache: Path | None = opt("Directory for the frozen teacher's block features (built once, reused; "
                                     "offline only).", None, from_cli=optional_path)
    load_in_8bit: bool = opt("Load the teacher's base in 8-bit (bitsandbytes; default: as the teacher trained).",
                             False, panel=RUN, decls=("--load-in-8bit",))
    load_in_4bit: bool = opt("Load the teacher's base in 4-bit NF4 (bitsandbytes; default: as the teacher trained).",
                             False, panel=RUN, decls=("--load-in-4bit",))
    teacher_cache_dtype: str = opt("How --teacher-cache stores the features: bf16 (half the size) | fp32.", "bf16",
                                   choices=CACHE_DTYPES)
    data: Path | None = opt("Dataset directory (default: the teacher's).", None)
    targets: str | None = opt("What the student trains on, as train-teacher's --targets (default: the teacher's).",
                              None, choices=TARGETS)
    train: LLMTrain = field(default_factory=LLMTrain)
    llm: LLMRunOptions = field(default_factory=LLMRunOptions)

    def __post_init__(self) -> None:
        if self.targets is not None:
            check_choice(self.targets, TARGETS, "--targets")
        check_choice(self.teacher_cache_dtype, CACHE_DTYPES, "--teacher-cache-dtype")
        check_one_quantization(self.load_in_8bit, self.load_in_4bit)
        if self.teacher_cache is not None and self.distill.mode == "online":
            raise SlmrecError("--teacher-cache needs --mode offline (an online teacher changes as it trains)")


@dataclass
class ReportConfig:
    """Regenerate the paper's tables and figures (datasets, quality, ablation, efficiency, probe, depth, B, online)
    from run directories into one Markdown file with PNG plots.

    Runs that differ only by --seed become one row (the first given), with their spread in a Seeds section and the
    student vs no-KD claim checked seed by seed."""

    runs: list[Path] = opt("Run directories (any mix of datasets; unfinished ones and plain files are skipped).",
                           argument=True)
    out: Path = opt("Markdown file to write.", Path("docs/results.md"))
    img_dir: Path | None = opt("Where the PNG plots go (default: img/ next to --out).", None)
    data: list[Path] = opt("Dataset directories (default: the paths the runs recorded); repeatable.", factory=list,
                           cli_type=list[Path] | None, cli_default=None, from_cli=lambda v: list(v or []))
    published: list[Path] = opt("More published-results JSON files to print beside ours where the protocol matches "
                                "(besides the package's own; format: docs/published/README.md); repeatable.",
                                factory=list, cli_type=list[Path] | None, cli_default=None,
                                from_cli=lambda v: list(v or []))
