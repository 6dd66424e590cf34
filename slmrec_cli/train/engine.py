"""The training loop every trainer shares: accelerate, warmup + cosine, selection on validation MRR,
atomic checkpoints and exact resume (data order is a pure function of seed and epoch)."""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.errors import Interrupted, SlmrecError
from slmrec_cli.train.checkpoint import CKPT, load_checkpoint, save_checkpoint


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
    patience: int = 10  # validations without a better MRR before stopping
    seed: int = 42
    mixed_precision: str = "auto"  # auto = bf16 on CUDA, fp32 on CPU
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


def make_accelerator(args: TrainArgs, run_dir: Path | None = None):
    from accelerate import Accelerator

    mp = args.mixed_precision
    if mp == "auto":
        mp = "bf16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "no"
    if mp != "no" and not torch.cuda.is_available():
        raise SlmrecError(f"--mixed-precision {mp} needs a CUDA GPU and none is visible; use --mixed-precision no")
    kwargs = {}
    if args.log_with:
        if args.log_with == "tensorboard":
            try:
                import tensorboard  # noqa: F401
            except ImportError:
                raise SlmrecError("--log-with tensorboard needs tensorboard: pip install tensorboard") from None
        kwargs = {"log_with": args.log_with, "project_dir": str(run_dir)}
    return Accelerator(mixed_precision=mp, gradient_accumulation_steps=args.grad_accum, **kwargs)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1) -> list:
    """This process's batches for an epoch: a seeded permutation, sharded by rank, in batch_size chunks."""
    order = np.random.default_rng([seed, epoch]).permutation(n)[rank::world]
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


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


def fit(task: Task, args: TrainArgs, run_dir: Path, *, resume: bool = False, accelerator=None,
        on_step: Callable[[int], None] | None = None, tracker_config: dict | None = None) -> FitResult:
    """Train `task.model`, keeping the weights with the best validation MRR (written by task.save_best)."""
    run_dir = Path(run_dir)
    acc = accelerator or make_accelerator(args, run_dir)
    torch.manual_seed(args.seed)
    params = [p for p in task.model.parameters() if p.requires_grad]
    if not params:
        raise SlmrecError("the model has no trainable parameters; check the LoRA/projection options")
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=args.weight_decay)
    per_epoch = len(epoch_batches(task.n_examples, args.batch_size, args.seed, 0, acc.process_index,
                                  acc.num_processes))
    total = max(1, args.epochs * per_epoch // args.grad_accum)
    scheduler = cosine_with_warmup(optimizer, int(args.warmup_ratio * total), total)
    # the scheduler stays unprepared: accelerate would step it once per process, our totals are per process
    model, optimizer = acc.prepare(task.model, optimizer)
    st = {"epoch": 0, "batch": 0, "step": 0, "best_mrr": -1.0, "best_step": -1, "bad_evals": 0,
          "train_seconds": 0.0, "epochs_done": 0, "stopped_early": False, "history": []}
    if resume and (run_dir / CKPT).exists():
        st.update(load_checkpoint(run_dir, acc.unwrap_model(model), optimizer, scheduler))
        ui.info(f"resumed {run_dir} at epoch {st['epoch'] + 1}, step {st['step']}")
    if args.log_with:
        acc.init_trackers(run_dir.name, config=tracker_config or asdict(args))
    log_path = run_dir / "train_log.jsonl"

    def log(record: dict) -> None:
        if acc.is_main_process:
            with open(log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if args.log_with:
                acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=st["step"])

    def validate_and_checkpoint() -> None:
        model.eval()
        metrics = task.validate(acc.unwrap_model(model))
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
        log({"event": "valid", "step": st["step"], "epoch": epoch,
             **{f"valid_{k}": v for k, v in metrics.items()}, "best": improved})
        ui.info(f"epoch {epoch} step {st['step']}: valid MRR {metrics['MRR']:.4f}"
                f"{' (best)' if improved else ''}")
        checkpoint()

    def checkpoint() -> None:
        if acc.is_main_process:
            save_checkpoint(run_dir, acc.unwrap_model(model), optimizer, scheduler, st)
        acc.wait_for_everyone()

    model.train()
    with _StopFlag():
        while st["epoch"] < args.epochs and not st["stopped_early"]:
            batches = epoch_batches(task.n_examples, args.batch_size, args.seed, st["epoch"],
                                    acc.process_index, acc.num_processes)
            t0 = time.monotonic()
            with ui.progress(f"epoch {st['epoch'] + 1}/{args.epochs}", total=len(batches)) as bar:
                bar.advance(st["batch"])
                while st["batch"] < len(batches):
                    batch = {k: v.to(acc.device) for k, v in task.batch(batches[st["batch"]]).items()}
                    with acc.accumulate(model):
                        loss, terms = task.loss(model, batch)
                        if not torch.isfinite(loss):
                            raise SlmrecError(f"training diverged (loss {loss.item()}) at step {st['step']}; "
                                              "lower --lr")
                        acc.backward(loss)
                        if acc.sync_gradients and args.grad_clip > 0:
                            acc.clip_grad_norm_(params, args.grad_clip)
                        optimizer.step()
                        if acc.sync_gradients:
                            scheduler.step()
                        optimizer.zero_grad()
                    st["batch"] += 1
                    if not acc.sync_gradients:
                        continue
                    st["step"] += 1
                    bar.advance(1, loss=f"{loss.item():.4f}")
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
                    if _StopFlag.requested:
                        st["train_seconds"] += time.monotonic() - t0
                        checkpoint()
                        raise Interrupted(f"stopped at step {st['step']}; continue with --resume")
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
    if st["best_step"] < 0:  # eval_every larger than the run: validate the final weights
        validate_and_checkpoint()
    if args.log_with:
        acc.end_training()
    if st["stopped_early"]:
        ui.info(f"early stop: no better valid MRR in {args.patience} validations")
    return FitResult(best_mrr=st["best_mrr"], best_step=st["best_step"], steps=st["step"],
                     epochs_run=st["epochs_done"], seconds_per_epoch=st["train_seconds"] / max(1, st["epochs_done"]),
                     stopped_early=st["stopped_early"], history=st["history"])
