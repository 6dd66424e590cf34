"""The configs of `export` and `recommend`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slmrec_cli.config.fields import (
    RUN,
    check_choice,
    check_device,
    check_eval_batch,
    device_opt,
    opt,
    split_commas,
)
from slmrec_cli.errors import SlmrecError

FORMATS = ("onnx", "safetensors")
QUANTIZE = ("none", "int8", "int4", "fp16")
INT8_SCHEMES = ("smooth", "block", "dynamic")
# what an export may hold
VARIANTS = ("torch-fp32", "onnx-fp32", "onnx-int8", "onnx-int4", "onnx-fp16", "bnb-int8", "bnb-nf4")
INT8_SERVES = 0.99  # the relative MRR at which `recommend` serves onnx-int8 by default (or its interval reaches it)
INT8_FLOOR = 0.97  # below this relative MRR onnx-int8 never serves by default, whatever its interval


def check_names(values: list[str], allowed: tuple[str, ...], option: str) -> list[str]:
    bad = [v for v in values if v not in allowed]
    if bad:
        raise SlmrecError(f"{option} {bad[0]!r} is not one of {', '.join(allowed)}")
    return values


@dataclass
class ExportConfig:
    """Merge LoRA, fold the prompt, write ONNX/safetensors (+ int8/int4), score every variant, benchmark latency."""

    run: Path | None = opt("Teacher or student run to export (default: the latest finished distill run under "
                           "./runs).", None, aliases=("--model",))
    out: Path | None = opt("Export directory (default exports/<run name>).", None)
    format: list[str] = opt("onnx, safetensors (both by default; repeatable or comma list).",
                            factory=lambda: list(FORMATS),
                            decls=("--format",), cli_type=list[str] | None, cli_default=None,
                            from_cli=lambda v: split_commas(v) or list(FORMATS))
    quantize: list[str] = opt("none | int8 | int4 | fp16 (repeatable or comma list): ONNX int8 dynamic / int4 block "
                              "MatMul / fp16 for ONNX Runtime's CUDA provider; bitsandbytes int8 / nf4.",
                              factory=lambda: ["none"], cli_type=list[str] | None,
                              cli_default=None, from_cli=lambda v: split_commas(v) or ["none"])
    int8_scheme: str = opt("onnx-int8 as smooth (SmoothQuant, then ORT dynamic int8 of every MatMul but the head) | "
                           "block (int8 weights and activations in blocks of 32) | dynamic (ORT dynamic int8, "
                           "outlier layers in fp32).", "smooth", choices=INT8_SCHEMES)
    smooth_alpha: float | None = opt("SmoothQuant migration strength α (0..1) (default: the best of 0.5, 0.65, 0.8 "
                                     "by int8-vs-fp32 agreement on training histories).", None)
    bench: bool = opt("Benchmark every variant on every available runtime.", False)
    bench_only: Path | None = opt("Only benchmark this existing export directory (no --run needed).", None)
    batch_sizes: list[int] = opt("Comma-separated batch sizes for the benchmark.", factory=lambda: [1, 32, 512],
                                 cli_type=str, cli_default="1,32,512", from_cli=lambda v: int_list(v))
    threads: int | None = opt("CPU threads for torch and ONNX Runtime (default: torch's).", None)
    eval_batch: int = opt("Users per evaluation batch.", 64, panel=RUN)
    device: str = device_opt("Where the LoRA is merged and the export scored and benchmarked: auto (merge and score "
                             "where the run trained when that GPU is visible, else the CPU in fp32; the benchmark on "
                             "every runtime available here) | cpu | cuda | cuda:N (there only).")
    force: bool = opt("Replace an existing export directory.", False)
    min_seconds: float = opt("Shortest time each benchmark cell runs.", 1.0, cli=False)

    def __post_init__(self) -> None:
        check_names(self.format, FORMATS, "--format")
        check_names(self.quantize, QUANTIZE, "--quantize")
        check_names([self.int8_scheme], INT8_SCHEMES, "--int8-scheme")
        check_eval_batch(self.eval_batch)
        check_device(self.device)
        if self.smooth_alpha is not None and not 0.0 <= self.smooth_alpha <= 1.0:
            raise SlmrecError(f"--smooth-alpha must be between 0 and 1, got {self.smooth_alpha}")
        if any(b < 1 for b in self.batch_sizes):
            raise SlmrecError(f"--batch-sizes must be positive integers, got {self.batch_sizes}")


def int_list(text: str | list) -> list[int]:
    items = text if isinstance(text, list) else split_commas(text)
    try:
        return [int(b) for b in items]
    except ValueError:
        raise SlmrecError(f"--batch-sizes must be comma-separated integers, got '{text}'") from None


@dataclass
class RecommendConfig:
    """Top-k next items for a history (raw ids in, raw ids out; items already in the history are never returned)."""

    export: Path = opt("An export directory from `slmrec export`.", aliases=("--model",))
    history: str | None = opt("Comma-separated raw item ids, oldest first.", None)
    input: Path | None = opt("A file with one comma-separated history per line.", None, decls=("--input",))
    k: int = opt("How many items to return.", 10)
    jsonl: bool = opt("Stream one JSON object per history on stdout as each is scored (JSON Lines; --json prints "
                      "one document at the end).", False, decls=("--jsonl",))
    variant: str | None = opt("The exported variant that serves (default: onnx-int8 when the export has it and "
                              f"quality.json puts its relative MRR at ≥ {INT8_SERVES}, or at ≥ {INT8_FLOOR} with a "
                              f"paired 95 % interval that reaches {INT8_SERVES}; else onnx-fp32, else torch-fp32).",
                              None, choices=VARIANTS)
    device: str = device_opt("Where the variant runs: auto (a CUDA GPU when one is visible and the variant's runtime "
                             "can use it, else the CPU) | cpu | cuda | cuda:N.")

    def __post_init__(self) -> None:
        if self.variant is not None:
            check_choice(self.variant, VARIANTS, "--variant")
        check_device(self.device)
        if (self.history is None) == (self.input is None):
            raise SlmrecError("give exactly one of --history ID,ID,... or --input FILE (one history per line)")
        if self.k < 1:
            raise SlmrecError(f"--k must be at least 1, got {self.k}")
