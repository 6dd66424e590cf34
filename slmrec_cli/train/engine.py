"""The training loop every trainer shares: accelerate, warmup + cosine, selection on validation MRR,
atomic checkpoints and exact resume (data order is a pure function of seed and epoch)."""

from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.errors import Interrupted, SlmrecError
from slmrec_cli.io import atomic_path
from slmrec_cli.train.checkpoint import CKPT, load_checkpoint, recover_checkpoint, rng_states, save_checkpoint


@dataclass
class TrainArgs:
    epochs: int = 200
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.0
    warmup_ratio: float = 0.02
    grad_clip: float = 1.0
    grad_accum: int = 1
    eval_every: int = 0  # optimizer steps between validations; 0 = once per epoch
    max_steps: int = 0  # stop after this many optimizer steps (0 = no cap); the schedule ends there too
    patience: int = 10  # validations without a better MRR before stopping
    seed: int = 42
    mixed_precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU (config.json records what was used)
    log_every: int = 20
    log_with: str | None = None

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
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise SlmrecError(f"--mixed-precision must be auto|no|bf16|fp16, got {self.mixed_precision}")


class Task(Protocol):
    """What a trainer supplies; the loop is the same for every model."""

    model: torch.nn.Module
    n_examples: int

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]: ...
    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, float]]: ...
    def validate(self, model: torch.nn.Module) -> dict[str, float]: ...
    def save_best(self, model: torch.nn.Module, run_dir: Path) -> None: ...


@dataclass
class FitResult:
    best_mrr: float
    best_step: int
    steps: int
    epochs_run: int
    seconds_per_epoch: float
    stopped_early: bool
    history: list = field(default_factory=list)


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def cpu_bf16_supported() -> bool:
    """Native bf16 matmuls on this CPU (AVX-512 BF16 or AMX tiles). Without them torch emulates bf16, many times
    slower than fp32 (benchmarks/precision.py)."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")  # torch.cpu's own probes (private API)
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def resolve_precision(requested: str) -> str:
    """accelerate's mixed_precision for --mixed-precision: auto = bf16 on a CUDA GPU that has it, else fp32 ("no").
    On CPU, bf16 is allowed where the CPU computes it natively; fp16 needs CUDA."""
    cuda = torch.cuda.is_available()
    if requested == "auto":
        return "bf16" if cuda and torch.cuda.is_bf16_supported() else "no"
    if requested == "fp16" and not cuda:
        raise SlmrecError("--mixed-precision fp16 needs a CUDA GPU and none is visible; use --mixed-precision no "
                          "(or bf16 on a CPU with AVX-512 BF16 or AMX)")
    if requested == "bf16" and not cuda and not cpu_bf16_supported():
        raise SlmrecError("--mixed-precision bf16: this CPU has no native bf16 (AVX-512 BF16 or AMX), so torch "
                          "would emulate it many times slower than fp32; use --mixed-precision no (or auto)")
    return requested


def precision_of(acc) -> str:
    """The precision a run actually trained in, for its config.json: fp32, bf16 or fp16."""
    mp = str(getattr(acc.mixed_precision, "value", acc.mixed_precision))
    return "fp32" if mp == "no" else mp


def make_accelerator(args: TrainArgs, run_dir: Path | None = None):
    """accelerate's Accelerator; under torchrun / accelerate launch it joins the process group (gloo on CPU)."""
    from accelerate import Accelerator
    from accelerate.utils import InitProcessGroupKwargs

    from slmrec_cli.distributed import use_cpu

    mp = resolve_precision(args.mixed_precision)
    kwargs = {}
    if args.log_with:
        if args.log_with == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise SlmrecError("--log-with tensorboard needs tensorboard: pip install tensorboard") from None
        kwargs = {"log_with": args.log_with, "project_dir": str(run_dir)}
    # the other processes wait while the main one builds a teacher cache: give barriers hours, not the default 30 min
    handlers = [InitProcessGroupKwargs(timeout=timedelta(hours=3))]
    # cpu=True on a CPU-only machine: without it accelerate ignores torchrun's environment and runs each process alone
    acc = Accelerator(cpu=use_cpu(), mixed_precision=mp, gradient_accumulation_steps=args.grad_accum,
                      kwargs_handlers=handlers, **kwargs)
    check_parallelism(acc)  # before any run directory is created
    return acc


UNSUPPORTED = {"FSDP": "FSDP", "DEEPSPEED": "DeepSpeed", "MEGATRON_LM": "Megatron-LM", "XLA": "XLA/TPU"}


def check_parallelism(acc) -> None:
    """Data parallel (DDP, or one process) only: validation, best weights and checkpoints read whole parameters,
    which sharded engines (FSDP, DeepSpeed ZeRO) do not hold; refuse them rather than save shards as a model."""
    name = UNSUPPORTED.get(str(getattr(acc.distributed_type, "name", acc.distributed_type)))
    if name:
        raise SlmrecError(f"{name} is not supported by slmrec's trainers yet (they need whole parameters on every "
                          "process); launch with DDP (examples/accelerate/ddp8.yaml) and use --gradient-checkpointing "
                          "or --load-in-8bit/--load-in-4bit for memory (docs/scaling.md)")


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list:
    """This process's batches for an epoch: a seeded permutation, wrapped round to a multiple of `world` (as
    DistributedSampler does) so every process takes the same number of steps, sharded by rank, in batch_size chunks.
    One process: the permutation itself."""
    order = np.random.default_rng([seed, epoch]).permutation(n)
    if world > 1 and n % world:
        order = np.resize(order, -(-n // world) * world)
    order = order[rank::world]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def optimizer_steps(n_batches: int, grad_accum: int) -> int:
    """Optimizer steps in an epoch of n_batches micro-batches: groups of grad_accum, the last one may be short."""
    return -(-n_batches // grad_accum)


class _StopFlag:
    """Ctrl-C asks the loop to stop at the next optimizer step, save a checkpoint and exit cleanly."""

    requested = False

    def __enter__(self):
        _StopFlag.requested = False
        self.prev = signal.getsignal(signal.SIGINT)

        def handler(signum, frame):
            if _StopFlag.requested:  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            _StopFlag.requested = True
            ui.info("[yellow]interrupt: saving a checkpoint after this step (Ctrl-C again to abort)[/]")

        try:
            signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread
            self.prev = None
        return self

    def __exit__(self, *exc):
        if self.prev is not None:
            signal.signal(signal.SIGINT, self.prev)


def request_stop() -> None:
    _StopFlag.requested = True


def _stop_agreed(acc) -> bool:
    """Ctrl-C reaches each process at its own moment: stop when any asked, so all stop at the same step."""
    if acc.num_processes == 1:
        return _StopFlag.requested
    flag = torch.tensor([1.0 if _StopFlag.requested else 0.0], device=acc.device)
    return bool(acc.reduce(flag, reduction="sum").item() > 0)


def _trim_log(path: Path, step: int) -> None:
    """On resume, drop the log lines written after the checkpoint: the resumed run writes them again."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= step:
                keep.append(line)
        except ValueError:  # a line cut short by the kill
            continue
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{x}\n" for x in keep))


def fit(task: Task, args: TrainArgs, run_dir: Path, *, resume: bool = False, accelerator=None,
        on_step: Callable[[int], None] | None = None, tracker_config: dict | None = None) -> FitResult:
    """Train `task.model`, keeping the weights with the best validation MRR (written by task.save_best).

    Under several processes every process runs this: each takes its shard of every epoch's permutation, DDP averages
    the gradients, validation is split across processes and gathered (so every process sees the same metrics and
    takes the same early-stopping decision), and only the main process writes files."""
    run_dir = Path(run_dir)
    acc = accelerator or make_accelerator(args, run_dir)
    check_parallelism(acc)
    torch.manual_seed(args.seed)
    params = [p for p in task.model.parameters() if p.requires_grad]
    if not params:
        raise SlmrecError("the model has no trainable parameters; check the LoRA/projection options")
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    per_epoch = len(epoch_batches(task.n_examples, args.batch_size, args.seed, 0, acc.process_index,
                                  acc.num_processes))
    per_epoch_steps = optimizer_steps(per_epoch, args.grad_accum)
    total = max(1, args.epochs * per_epoch_steps)
    if args.max_steps:
        total = min(total, args.max_steps)
    scheduler = cosine_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    # the scheduler stays unprepared: accelerate would step it once per process, our totals are per process
    model, optimizer = acc.prepare(task.model, optimizer)
    st = {"epoch": 0, "batch": 0, "step": 0, "best_mrr": -1.0, "best_step": -1, "bad_evals": 0,
          "train_seconds": 0.0, "epochs_done": 0, "stopped_early": False, "history": []}
    log_path = run_dir / "train_log.jsonl"
    if resume:
        if acc.is_main_process:
            recover_checkpoint(run_dir)
        acc.wait_for_everyone()
        if (run_dir / CKPT).exists():  # killed before its first checkpoint: start again from step 0
            st.update(load_checkpoint(run_dir, acc.unwrap_model(model), optimizer, scheduler,
                                      rank=acc.process_index, world_size=acc.num_processes))
        if acc.is_main_process:
            _trim_log(log_path, st["step"])
        ui.info(f"resumed {run_dir} at epoch {st['epoch'] + 1}, step {st['step']}")
    if args.log_with:
        acc.init_trackers(run_dir.name, config=tracker_config or asdict(args))

    def log(record: dict) -> None:
        if acc.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if args.log_with:
                acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=st["step"])

    def validate_and_checkpoint() -> None:
        model.eval()
        metrics = task.validate(acc.unwrap_model(model))  # identical on every process (gathered ranks)
        model.train()
        improved = metrics["MRR"] > st["best_mrr"]
        if improved:
            st.update(best_mrr=metrics["MRR"], best_step=st["step"], bad_evals=0)
            if acc.is_main_process:
                task.save_best(acc.unwrap_model(model), run_dir)
        else:
            st["bad_evals"] += 1
        epoch = st["epoch"] + (1 if st["batch"] else 0)  # epochs begun
        st["history"].append({"step": st["step"], "epoch": epoch, "valid_MRR": metrics["MRR"]})
        log({"event": "valid", "step": st["step"], "epoch": epoch, "epochs": round(st["step"] / per_epoch_steps, 4),
             **{f"valid_{k}": v for k, v in metrics.items()}, "best": improved})
        ui.info(f"epoch {epoch} step {st['step']}: valid MRR {metrics['MRR']:.4f}"
                f"{' (best)' if improved else ''}")
        checkpoint()

    def checkpoint() -> None:
        rng = rng_states(acc)  # every process's RNG, gathered: a collective, so before the main-only write
        if acc.is_main_process:
            save_checkpoint(run_dir, acc.unwrap_model(model), optimizer, scheduler, st, rng, acc.num_processes)
        acc.wait_for_everyone()

    model.train()
    with _StopFlag():
        while st["epoch"] < args.epochs and not st["stopped_early"] and st["step"] < total:
            batches = epoch_batches(task.n_examples, args.batch_size, args.seed, st["epoch"],
                                    acc.process_index, acc.num_processes)
            t0 = time.monotonic()
            with ui.progress(f"epoch {st['epoch'] + 1}/{args.epochs}", total=len(batches)) as bar:
                bar.advance(st["batch"])
                while st["batch"] < len(batches):
                    # an optimizer step every grad_accum micro-batches and at the epoch's end, so a checkpoint
                    # (always after a step) never leaves gradients half accumulated
                    step_now = (st["batch"] + 1) % args.grad_accum == 0 or st["batch"] + 1 == len(batches)
                    group = min(args.grad_accum, len(batches) - st["batch"] // args.grad_accum * args.grad_accum)
                    batch = {k: v.to(acc.device) for k, v in task.batch(batches[st["batch"]]).items()}
                    with contextlib.nullcontext() if step_now else acc.no_sync(model):
                        loss, terms = task.loss(model, batch)
                        if not torch.isfinite(loss):
                            raise SlmrecError(f"training diverged (loss {loss.item()}) at step {st['step']}; "
                                              "lower --lr")
                        acc.backward(loss * (args.grad_accum / group))  # backward divides by grad_accum: a mean
                    st["batch"] += 1
                    bar.advance(1)
                    if not step_now:
                        continue
                    if args.grad_clip > 0:
                        acc.clip_grad_norm_(params, args.grad_clip)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                    st["step"] += 1
                    bar.advance(0, loss=f"{loss.item():.4f}")
                    if st["step"] % args.log_every == 0:
                        log({"event": "train", "step": st["step"], "epoch": st["epoch"] + 1,
                             "lr": scheduler.get_last_lr()[0], "loss": loss.item(), **terms})
                    if on_step:
                        on_step(st["step"])
                    if args.eval_every and st["step"] % args.eval_every == 0:
                        validate_and_checkpoint()
                        if st["bad_evals"] >= args.patience:
                            st["stopped_early"] = True
                            break
                    if _stop_agreed(acc):
                        st["train_seconds"] += time.monotonic() - t0
                        checkpoint()
                        raise Interrupted(f"stopped at step {st['step']}; continue with --resume")
                    if st["step"] >= total:  # --max-steps reached inside the epoch
                        break
            st["train_seconds"] += time.monotonic() - t0
            st["epoch"] += 1
            st["batch"] = 0
            st["epochs_done"] += 1
            if not args.eval_every and not st["stopped_early"]:
                validate_and_checkpoint()
                if st["bad_evals"] >= args.patience:
                    st["stopped_early"] = True
            elif st["stopped_early"] is False:
                checkpoint()
    if st["best_step"] < 0 or (st["history"] and st["history"][-1]["step"] != st["step"] and not st["stopped_early"]):
        validate_and_checkpoint()  # the final weights were not validated (eval_every not dividing the steps run)
    if args.log_with:
        acc.end_training()
    if st["stopped_early"]:
        ui.info(f"early stop: no better valid MRR in {args.patience} validations")
    return FitResult(best_mrr=st["best_mrr"], best_step=st["best_step"], steps=st["step"],
                     epochs_run=st["epochs_done"],
                     seconds_per_epoch=st["train_seconds"] * per_epoch_steps / max(1, st["step"]),  # partial epochs
                     stopped_early=st["stopped_early"], history=st["history"])
