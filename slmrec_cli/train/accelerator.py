"""The accelerate side of training: the precision a run may use on this machine, and the Accelerator (one process,
or a DDP group under torchrun / accelerate launch)."""

from __future__ import annotations

import os
import warnings
from datetime import timedelta
from pathlib import Path

import torch

from slmrec_cli.config.train import TrainArgs
from slmrec_cli.errors import SlmrecError


def cpu_bf16_supported() -> bool:
    """Native bf16 matmuls on this CPU (AVX-512 BF16 or AMX tiles). Without them torch emulates bf16, many times
    slower than fp32 (benchmarks/precision.py)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private API)
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cpu_auto_bf16_allowed() -> bool:
    """SLMREC_CPU_AUTO_BF16=0 keeps `auto` at fp32 on every CPU (the test suite sets it: its tolerances are fp32's)."""
    return os.environ.get("SLMREC_CPU_AUTO_BF16", "1") != "0"


def resolve_precision(requested: str, auto_bf16: bool = False) -> str:
    """accelerate's mixed_precision for --mixed-precision. auto = fp32 ("no") for a stage that does not ask for bf16
    (SASRec, the fixed baseline, trains in fp32 on every device, as the study measured it); for the LLM stages
    (auto_bf16) bf16 on a CUDA GPU that has it, and on a CPU that computes bf16 natively (AVX-512 BF16 or AMX: 0.8x
    the fp32 step time, 0.5x the inference time, validation MRR within the seed spread; docs/findings.md), else fp32.
    An explicit bf16 on CPU needs native support; fp16 needs CUDA."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        if not auto_bf16:
            return "no"
        if cuda:
            return "bf16" if torch.cuda.is_bf16_supported() else "no"
        return "bf16" if cpu_auto_bf16_allowed() and cpu_bf16_supported() else "no"
    if requested == "fp16" and not cuda:
        raise SlmrecError("--mixed-precision fp16 needs a CUDA GPU and none is visible; use --mixed-precision no "
                          "(or bf16 on a CPU with AVX-512 BF16 or AMX)")
    if requested == "bf16" and not cuda and not cpu_bf16_supported():
        raise SlmrecError("--mixed-precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), so torch "
                          "would emulate it many times slower than fp32; use --mixed-precision no (or auto)")
    return requested


def use_deterministic_kernels() -> None:
    """--deterministic: every op either runs a deterministic kernel or raises (torch.use_deterministic_algorithms);
    cuBLAS gets the fixed workspace it needs for that (CUBLAS_WORKSPACE_CONFIG, read when cuBLAS starts, so set before
    the first CUDA matmul; a value the user set is kept); cuDNN does not autotune; attention on CUDA takes the math
    kernel (the flash and memory-efficient backward passes accumulate with atomics, in no fixed order)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    torch.backends.cudnn.deterministic = True
    if torch.cuda.is_available():
        torch.backends.cuda.enable_flash_sdp(False)
        torch.backends.cuda.enable_mem_efficient_sdp(False)


def base_dtype(acc) -> torch.dtype | None:
    """The frozen base's dtype for a run on `acc`: float16 when it trains in fp16 (the default bfloat16 base on CUDA
    would meet fp16 autocast: two half formats, bf16's range lost on each cast), else the device's default (None)."""
    return torch.float16 if precision_of(acc) == "fp16" else None


def precision_of(acc) -> str:
    """The precision a run actually trained in, for its config.json: fp32, bf16 or fp16."""
    mp = str(getattr(acc.mixed_precision, "value", acc.mixed_precision))
    return "fp32" if mp == "no" else mp


def make_accelerator(args: TrainArgs, run_dir: Path | None = None, auto_bf16: bool = False):
    """accelerate's Accelerator; under torchrun / accelerate launch it joins the process group (gloo on CPU).
    auto_bf16: `auto` may pick bf16, on CUDA or a CPU that has it (the LLM stages; SASRec, the fixed baseline, stays
    fp32 on every device)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from slmrec_cli.distributed import use_cpu

    mp = resolve_precision(args.mixed_precision, auto_bf16)
    if args.deterministic:
        use_deterministic_kernels()
    kwargs = {}
    if args.log_with:
        if args.log_with == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise SlmrecError("--log-with tensorboard needs tensorboard: pip install tensorboard") from None
        kwargs = {"log_with": args.log_with, "project_dir": str(run_dir)}
    # barriers wait for the slowest process (its share of a teacher cache, a long validation): hours, not 30 min
    handlers = [InitProcessGroupKwargs(timeout=timedelta(hours=3)), ddp_handler()]
    # cpu=True on a CPU-only machine: without it accelerate ignores torchrun's environment and runs each process alone;
    # gradient_accumulation_steps=1: the engine scales the loss for --grad-accum itself (engine._Fit.micro_batch)
    acc = Accelerator(cpu=use_cpu(), mixed_precision=mp, gradient_accumulation_steps=1, kwargs_handlers=handlers,
                      **kwargs)
    check_parallelism(acc)  # before any run directory is created
    return acc


def ddp_handler():
    """How DDP wraps a model: without broadcasting its buffers from process 0 before every forward (DDP's default).
    Our buffers are frozen and every process loads them from the same files: the item id table (~0.5 GB a step at a
    million items) and the prompt's token ids. torch >= 2.13 calls `broadcast_buffers` deprecated in favour of
    `forward_sync_buffers`, which accelerate's handler cannot pass yet: its warning is silenced, and False also skips
    the buffer sync when DDP is built, which the same files make unneeded."""
    from accelerate.utils import DistributedDataParallelKwargs

    warnings.filterwarnings("ignore", message="`broadcast_buffers` is deprecated", category=FutureWarning)
    return DistributedDataParallelKwargs(broadcast_buffers=False)


UNSUPPORTED = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed", "MEGATRON_LM": "Megatron-LM", "XLA": "XLA/TPU"}


def check_parallelism(acc) -> None:
    """Data parallel (DDP, or one process) only: validation, best weights and checkpoints read whole parameters,
    which sharded engines (FSDP, DeepSpeed ZeRO) do not hold; refuse them rather than save shards as a model."""
    name = UNSUPPORTED.get(str(getattr(acc.distributed_type, "name", acc.distributed_type)))
    if name:
        raise SlmrecError(f"{name} is not supported by slmrec's trainers yet (they need whole parameters on every "
                          "process); launch with DDP (examples/accelerate/ddp8.yaml) and use --gradient-checkpointing "
                          "or --load-in-8bit/--load-in-4bit for memory (docs/scaling.md)")
