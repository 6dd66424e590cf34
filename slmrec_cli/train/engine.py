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
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from slmrec_cli import ui
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.errors import Interrupted, SlmrecError
from slmrec_cli.io import atomic_path
from slmrec_cli.train.accelerator import make_accelerator
from slmrec_cli.train.checkpoint import (
    CKPT,
    TrainState,
    load_checkpoint,
    recover_checkpoint,
    rng_states,
    save_checkpoint,
)


class Task(Protocol):
    """What a trainer supplies; the loop is the same for every model."""

    model: torch.nn.Module
    n_examples: int
    lengths: np.ndarray  # [n_examples] input items of each example: what --group-by-length sorts by

    def batch(self, indices: np.ndarray) -> dict[str, torch.Tensor]: ...
    def loss(self, model: torch.nn.Module, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]: ...
    def validate(self, model: torch.nn.Module) -> dict: ...  # protocol → SplitResult of the valid split
    def save_best(self, model: torch.nn.Module, run_dir: Path) -> None: ...


@dataclass
class FitResult:
    """What `fit` returns: where training ended, its timings, and the selected step's valid results."""

    state: TrainState
    seconds_per_epoch: float  # over the steps this and earlier (resumed) processes ran, partial epochs included
    seconds_per_step: float
    # the selected step's valid results (protocol → SplitResult), so the run's valid records need no second pass;
    # None when that step was validated before a resume
    best_valid: dict | None = field(default=None, repr=False)

    def record(self) -> dict:
        """A training stage's "fit" record (in its --json result)."""
        st = self.state
        return {"best_mrr": st.best_mrr, "best_step": st.best_step, "steps": st.step, "epochs_run": st.epochs_done,
                "seconds_per_epoch": self.seconds_per_epoch, "seconds_per_step": self.seconds_per_step,
                "stopped_early": st.stopped_early, "history": st.history}


def step_schedule(optimizer, scheduler) -> None:
    """The learning-rate schedule moves with the optimizer's real steps: under fp16 the gradient scaler skips a step
    whose gradients overflowed (accelerate's optimizer says so in step_was_skipped), and the schedule waits with it,
    as transformers' Trainer does. The scheduler is not given to accelerate.prepare (see Fit), so this is ours."""
    if not getattr(optimizer, "step_was_skipped", False):
        scheduler.step()


def cosine_with_warmup(optimizer, warmup: int, total: int) -> torch.optim.lr_scheduler.LambdaLR:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


GROUP = 50  # batches per length-sorted group (Hugging Face's LengthGroupedSampler uses 50 too)


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1,
                  lengths: np.ndarray | None = None) -> list:
    """This process's batches for an epoch: a seeded permutation, wrapped round to a multiple of `world` (as
    DistributedSampler does) so every process takes the same number of steps, sharded by rank, in batch_size chunks.
    One process: the permutation itself.

    With `lengths` (group by length): the permutation is cut into groups of GROUP batches (of every process), each
    sorted by length, longest first, so a batch holds examples of similar length; the batches are then shuffled, so
    the lengths do not cycle. Every example still comes once per epoch, and the order is a pure function of
    (seed, epoch): resume stays exact."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(n)
    if lengths is not None:
        group = GROUP * batch_size * world
        order = np.concatenate([g[np.argsort(-lengths[g], kind="stable")] for g in np.split(
            order, list(range(group, n, group)))]) if n else order
    if world > 1 and n % world:
        order = np.resize(order, -(-n // world) * world)
    order = order[rank::world]
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if lengths is not None:  # the same shuffle on every process: each has as many batches
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def optimizer_steps(n_batches: int, grad_accum: int) -> int:
    """Optimizer steps in an epoch of n_batches micro-batches: groups of grad_accum, the last one may be short."""
    return -(-n_batches // grad_accum)


class _StopFlag:
    """Ctrl-C (SIGINT), or the SIGTERM a scheduler (SLURM, Kubernetes, systemd) sends before it kills a job, asks the
    loop to stop at the next optimizer step, save a checkpoint and exit cleanly (130 or 143, 128 + the signal)."""

    requested = False
    signum = signal.SIGINT

    def __enter__(self):
        _StopFlag.requested, _StopFlag.signum = False, signal.SIGINT
        self.prev = {}

        def handler(signum, _frame):
            if _StopFlag.requested:  # second signal: stop now
                raise KeyboardInterrupt
            _StopFlag.requested, _StopFlag.signum = True, signum
            ui.info(f"[yellow]{signal.Signals(signum).name}: saving a checkpoint after this step "
                    "(send it again to abort)[/]")

        try:
            for sig in (signal.SIGINT, signal.SIGTERM):
                self.prev[sig] = signal.getsignal(sig)
                signal.signal(sig, handler)
        except ValueError:  # not the main thread
            self.prev = {}
        return self

    def __exit__(self, *exc):
        for sig, prev in self.prev.items():
            signal.signal(sig, prev)


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


class _Fit:
    """One call of `fit`: the prepared model, optimizer and schedule, and the state they move forward."""

    def __init__(self, task: Task, args: TrainArgs, run_dir: Path, acc, on_step):
        self.task, self.args, self.run_dir, self.acc, self.on_step = task, args, run_dir, acc, on_step
        torch.manual_seed(args.seed)
        self.params = [p for p in task.model.parameters() if p.requires_grad]
        if not self.params:
            raise SlmrecError("the model has no trainable parameters; check the LoRA/projection options")
        optimizer = torch.optim.AdamW(self.params, lr=args.lr, weight_decay=args.weight_decay)
        self.per_epoch_steps = optimizer_steps(len(self.batches(0)), args.grad_accum)
        self.total = max(1, args.epochs * self.per_epoch_steps)
        if args.max_steps:
            self.total = min(self.total, args.max_steps)
        self.scheduler = cosine_with_warmup(optimizer, int(args.warmup_ratio * self.total), self.total)
        # the scheduler stays unprepared: accelerate would step it once per process, our totals are per process
        self.model, self.optimizer = acc.prepare(task.model, optimizer)
        self.state = TrainState()
        self.best_valid = None
        self.log_path = run_dir / "train_log.jsonl"
        self.nonfinite: torch.Tensor | None = None  # whether a loss since the last check_finite was NaN or inf
        self.shown_loss = ""  # the progress bar's loss, updated at each logged step

    def batches(self, epoch: int) -> list:
        lengths = self.task.lengths if self.args.group_by_length else None
        return epoch_batches(self.task.n_examples, self.args.batch_size, self.args.seed, epoch,
                             self.acc.process_index, self.acc.num_processes, lengths)

    def resume(self) -> None:
        acc = self.acc
        if acc.is_main_process:
            recover_checkpoint(self.run_dir)
        acc.wait_for_everyone()
        if (self.run_dir / CKPT).exists():  # killed before its first checkpoint: start again from step 0
            self.state = load_checkpoint(self.run_dir, acc.unwrap_model(self.model), self.optimizer, self.scheduler,
                                         rank=acc.process_index, world_size=acc.num_processes)
        if acc.is_main_process:
            _trim_log(self.log_path, self.state.step)
        ui.info(f"resumed {self.run_dir} at epoch {self.state.epoch + 1}, step {self.state.step}")

    def log(self, record: dict) -> None:
        if self.acc.is_main_process:
            with open(self.log_path, "a") as f:
                f.write(json.dumps(record) + "\n")
            if self.args.log_with:
                self.acc.log({k: v for k, v in record.items() if isinstance(v, (int, float))}, step=self.state.step)

    def check_finite(self) -> None:
        """Stop on a non-finite loss seen since the last check (every log_every steps, before each validation and
        checkpoint), so no diverged weights are validated or saved."""
        if self.nonfinite is not None and bool(self.nonfinite):
            raise SlmrecError(f"training diverged (a non-finite loss by step {self.state.step}); lower --lr")
        self.nonfinite = None

    def checkpoint(self) -> None:
        self.check_finite()
        rng = rng_states(self.acc)  # every process's RNG, gathered: a collective, so before the main-only write
        if self.acc.is_main_process:
            save_checkpoint(self.run_dir, self.acc.unwrap_model(self.model), self.optimizer, self.scheduler,
                            self.state, rng, self.acc.num_processes)
        self.acc.wait_for_everyone()

    def validate(self) -> None:
        """Score valid (identical on every process: the ranks are gathered), keep the best weights, checkpoint,
        and stop early once `patience` validations in a row found nothing better."""
        st, acc = self.state, self.acc
        self.check_finite()
        self.model.eval()
        results = self.task.validate(acc.unwrap_model(self.model))
        metrics = results["sampled"].metrics
        self.model.train()
        improved = metrics["MRR"] > st.best_mrr
        if improved:
            st.best_mrr, st.best_step, st.bad_evals = metrics["MRR"], st.step, 0
            self.best_valid = results
            if acc.is_main_process:
                self.task.save_best(acc.unwrap_model(self.model), self.run_dir)
        else:
            st.bad_evals += 1
        epoch = st.epoch + (1 if st.batch else 0)  # epochs begun
        st.history.append({"step": st.step, "epoch": epoch, "valid_MRR": metrics["MRR"]})
        self.log({"event": "valid", "step": st.step, "epoch": epoch, "epochs": round(st.step / self.per_epoch_steps, 4),
                  **{f"valid_{k}": v for k, v in metrics.items()}, "best": improved})
        ui.info(f"epoch {epoch} step {st.step}: valid MRR {metrics['MRR']:.4f}{' (best)' if improved else ''}")
        self.checkpoint()
        if st.bad_evals >= self.args.patience:
            st.stopped_early = True

    def micro_batch(self, indices: np.ndarray, last_of_epoch: bool) -> tuple[torch.Tensor, dict, bool]:
        """Forward and backward one micro-batch; (loss, terms, whether an optimizer step follows). A step comes every
        grad_accum micro-batches and at the epoch's end, so a checkpoint (always after a step) never leaves
        gradients half accumulated; the last group may be short.

        The one place the loss is scaled for gradient accumulation (make_accelerator leaves accelerate's
        gradient_accumulation_steps at 1, so acc.backward divides by 1): each micro-batch's mean loss counts 1/group,
        so a step's gradient is the mean over its group, a short last group too. Written × accum/group ÷ accum, the
        order in which the two halves of this scaling ran when accelerate held the ÷ accum: the same bits."""
        st, acc, accum = self.state, self.acc, self.args.grad_accum
        step_now = (st.batch + 1) % accum == 0 or last_of_epoch
        group = min(accum, self.epoch_len - st.batch // accum * accum)
        batch = {k: v.to(acc.device) for k, v in self.task.batch(indices).items()}
        with contextlib.nullcontext() if step_now else acc.no_sync(self.model):
            loss, terms = self.task.loss(self.model, batch)
            bad = ~torch.isfinite(loss.detach())  # read on the host only at check_finite: no sync every step
            self.nonfinite = bad if self.nonfinite is None else self.nonfinite | bad
            acc.backward(loss * (accum / group) / accum)  # the group's mean (see above)
        st.batch += 1
        return loss, terms, step_now

    def optimizer_step(self, loss: torch.Tensor, terms: dict) -> None:
        st, args = self.state, self.args
        if args.grad_clip > 0:
            self.acc.clip_grad_norm_(self.params, args.grad_clip)
        self.optimizer.step()
        step_schedule(self.optimizer, self.scheduler)
        self.optimizer.zero_grad()
        st.step += 1
        if st.step % args.log_every == 0:  # the host reads the loss (a device sync) only here
            self.check_finite()
            self.log({"event": "train", "step": st.step, "epoch": st.epoch + 1, "lr": self.scheduler.get_last_lr()[0],
                      "loss": loss.item(), **{k: float(v) for k, v in terms.items()}})
            self.shown_loss = f"{loss.item():.4f}"
        if self.on_step:
            self.on_step(st.step)

    def run_epoch(self) -> None:
        """The rest of the current epoch: stops inside it for early stopping, --max-steps, or Ctrl-C (which
        checkpoints and raises Interrupted)."""
        st, args = self.state, self.args
        batches = self.batches(st.epoch)
        self.epoch_len = len(batches)
        t0 = time.monotonic()
        with ui.progress(f"epoch {st.epoch + 1}/{args.epochs}", total=len(batches)) as bar:
            bar.advance(st.batch)
            while st.batch < len(batches):
                loss, terms, step_now = self.micro_batch(batches[st.batch], st.batch + 1 == len(batches))
                bar.advance(1)
                if not step_now:
                    continue
                self.optimizer_step(loss, terms)
                bar.advance(0, loss=self.shown_loss)
                if args.eval_every and st.step % args.eval_every == 0:
                    self.validate()
                    if st.stopped_early:
                        break
                if _stop_agreed(self.acc):
                    st.train_seconds += time.monotonic() - t0
                    self.checkpoint()
                    raise Interrupted(f"stopped at step {st.step}; continue with --resume", 128 + _StopFlag.signum)
                if st.step >= self.total:  # --max-steps reached inside the epoch
                    break
        st.train_seconds += time.monotonic() - t0
        st.epoch, st.batch, st.epochs_done = st.epoch + 1, 0, st.epochs_done + 1

    def run(self) -> FitResult:
        st, args = self.state, self.args
        self.model.train()
        with _StopFlag():
            while st.epoch < args.epochs and not st.stopped_early and st.step < self.total:
                self.run_epoch()
                if not args.eval_every and not st.stopped_early:
                    self.validate()
                elif not st.stopped_early:
                    self.checkpoint()
        if st.best_step < 0 or (st.history and st.history[-1]["step"] != st.step and not st.stopped_early):
            self.validate()  # the final weights were not validated (eval_every not dividing the steps run)
        if args.log_with:
            self.acc.end_training()
        if st.stopped_early:
            ui.info(f"early stop: no better valid MRR in {args.patience} validations")
        return FitResult(st, seconds_per_epoch=st.train_seconds * self.per_epoch_steps / max(1, st.step),
                         seconds_per_step=st.train_seconds / max(1, st.step), best_valid=self.best_valid)


def fit(task: Task, args: TrainArgs, run_dir: Path, *, resume: bool = False, accelerator=None,
        on_step: Callable[[int], None] | None = None) -> FitResult:
    """Train `task.model`, keeping the weights with the best validation MRR (written by task.save_best).

    Under several processes every process runs this: each takes its shard of every epoch's permutation, DDP averages
    the gradients, validation is split across processes and gathered (so every process sees the same metrics and
    takes the same early-stopping decision), and only the main process writes files. `accelerator`: one from
    train.accelerator.make_accelerator (which refuses the sharded engines), made here when not given."""
    run_dir = Path(run_dir)
    acc = accelerator or make_accelerator(args, run_dir)
    loop = _Fit(task, args, run_dir, acc, on_step)
    if resume:
        loop.resume()
    if args.log_with:
        acc.init_trackers(run_dir.name, config=asdict(args))
    return loop.run()
