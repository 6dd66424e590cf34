"""Score a split under the sampled and/or full protocol and write metrics files (PROTOCOL.md)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from slmrec_cli import __version__
from slmrec_cli.config.evaluate import PROTOCOLS
from slmrec_cli.data import pad_to_longest
from slmrec_cli.distributed import gather_rows, process_state
from slmrec_cli.evaluation.ranking import metrics_from_ranks, pessimistic_ranks
from slmrec_cli.io import write_json
from slmrec_cli.ui import progress

# score_all(histories [B, T] long) -> scores [B, n_items + 1] (column 0 = padding, ignored)
ScoreAll = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class SplitResult:
    protocol: str
    user_ids: np.ndarray
    ranks: np.ndarray
    mask_history: bool
    candidates: int  # the most a user can have: the negatives + 1 (sampled), every item (full)
    scored: np.ndarray | None = None  # candidates each user was ranked among (padding negatives, masked history out)

    @property
    def metrics(self) -> dict[str, float]:
        return metrics_from_ranks(self.ranks)


PRECISIONS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}


def eval_precision(model) -> str:
    """What a model is evaluated in, for its metrics files: the dtype its network computes in (an LLM model's base: fp32
    on the CPU, bf16 on CUDA, whatever the training's autocast was; SASRec's weights). Evaluation never runs under
    autocast (rank_split turns it off), and the item scores are fp32 whatever this is (models/scoring.py)."""
    dtype = getattr(model, "compute_dtype", None) or next(p.dtype for p in model.parameters() if p.is_floating_point())
    return PRECISIONS.get(dtype, str(dtype).removeprefix("torch."))


# the most scores one evaluation batch holds ([users, n_items + 1] fp32: 256 MiB); past it the batch has fewer users
SCORES_PER_BATCH = 1 << 26


def eval_batches(data, split: str, users: np.ndarray, batch_size: int, max_len: int) -> list[np.ndarray]:
    """The users in batches of similar input length (a stable sort by length, capped at max_len), so a batch padded to
    its longest history carries little padding; at most SCORES_PER_BATCH scores a batch, whatever the catalogue."""
    rows = max(1, min(batch_size, SCORES_PER_BATCH // (data.n_items + 1)))
    lengths = data.lengths[users] - (2 if split == "valid" else 1)
    order = users[np.argsort(np.minimum(lengths, max_len), kind="stable")]
    return [order[s : s + rows] for s in range(0, len(order), rows)]


@torch.no_grad()
def rank_split(
    score_all: ScoreAll,
    data,
    split: str,
    protocols: Sequence[str] = PROTOCOLS,
    *,
    max_len: int,
    batch_size: int = 256,
    mask_history: bool = True,
    users: np.ndarray | None = None,
    device: torch.device | str = "cpu",
    desc: str | None = None,
) -> dict[str, SplitResult]:
    """Ranks of every user's target under each protocol, from one forward pass per batch (eval_batches: users of
    similar length together, each batch cut to its longest history). The results list the users in `users` order.

    Autocast is off inside (an enclosing bf16 region does not reach the model): the model computes in its own dtype,
    which eval_precision names.

    Under several processes (torchrun, accelerate launch) every process must call this: the batches are dealt out
    whole (process i scores batches i, i + n, ...), so each batch, and hence each score, is exactly the one-process
    batch; the ranks are then gathered to every process and de-duplicated by user id. Same numbers as one process
    (same batch size), on every process."""
    users = np.arange(data.n_users) if users is None else np.asarray(users, dtype=np.int64)
    state = process_state()
    world, rank = (state.num_processes, state.process_index) if state else (1, 0)
    mine = eval_batches(data, split, users, batch_size, max_len)[rank::world]
    targets_all = data.split_target(split)
    ranks = {p: [] for p in protocols}
    scored = {p: [] for p in protocols}  # candidates each user was really ranked among
    n_neg = data.negatives.shape[1]
    no_autocast = torch.autocast(torch.device(device).type, enabled=False)
    with progress(desc or f"eval {split}", total=sum(len(b) for b in mine)) as bar, no_autocast:
        for batch in mine:
            inputs = [data.split_input(split, int(u)) for u in batch]
            hist = torch.from_numpy(pad_to_longest(inputs, max_len)).to(device)
            scores = score_all(hist).float()
            targets = torch.from_numpy(targets_all[batch]).to(scores.device)
            pos = scores.gather(1, targets[:, None]).squeeze(1)
            if "sampled" in protocols:
                negs = torch.from_numpy(data.negatives[batch]).to(scores.device)
                ranks["sampled"].append(pessimistic_ranks(pos, scores.gather(1, negs), negs != 0).cpu())
                scored["sampled"].append(1 + (negs != 0).sum(1).cpu())
            if "full" in protocols:
                valid = torch.ones_like(scores, dtype=torch.bool)
                if mask_history:  # the whole input history, not only the max_len items the model read
                    valid.scatter_(1, torch.from_numpy(pad_to_longest(inputs)).to(valid.device), False)
                valid[:, 0] = False
                valid.scatter_(1, targets[:, None], False)  # the positive is not its own competitor
                ranks["full"].append(pessimistic_ranks(pos, scores, valid).cpu())
                scored["full"].append(1 + valid.sum(1).cpu())
            bar.advance(len(batch))

    def joined(parts: dict) -> dict:
        return {p: torch.cat(parts[p]).numpy() if parts[p] else np.zeros(0, dtype=np.int64) for p in protocols}

    local, counts = joined(ranks), joined(scored)
    local_users = np.concatenate(mine) if mine else np.zeros(0, dtype=np.int64)
    if world > 1:
        columns = [local_users, *(local[p] for p in protocols), *(counts[p] for p in protocols)]
        rows = gather_rows(state, np.stack(columns, axis=1), users)
        local = {p: rows[:, 1 + i] for i, p in enumerate(protocols)}
        counts = {p: rows[:, 1 + len(protocols) + i] for i, p in enumerate(protocols)}
    elif len(users):  # back from length order to the order of `users`
        back = np.argsort(np.argsort(users, kind="stable"))
        ahead = np.argsort(local_users, kind="stable")[back]
        local = {p: v[ahead] for p, v in local.items()}
        counts = {p: v[ahead] for p, v in counts.items()}
    out = {}
    for p in protocols:
        out[p] = SplitResult(
            protocol=p,
            user_ids=users,
            ranks=local[p],
            mask_history=mask_history if p == "full" else False,
            candidates=(n_neg + 1) if p == "sampled" else data.n_items,
            scored=counts[p],
        )
    return out


def metrics_record(result: SplitResult, data, split: str, run: str, precision: str) -> dict:
    """The metrics-file contract of issue 2 (extra keys allowed); precision: what the model was evaluated in
    (eval_precision; "fp32" for the popularity counts)."""
    return {
        "dataset": data.name,
        "data_hash": data.content_hash,
        "split": split,
        "protocol": result.protocol,
        "candidates": int(result.candidates),
        **({"candidates_min": int(result.scored.min()), "candidates_mean": float(result.scored.mean())}
           if result.scored is not None and len(result.scored) else {}),
        "mask_history": bool(result.mask_history),
        "eval_precision": precision,
        "users": int(len(result.ranks)),
        "run": run,
        "version": __version__,
        "metrics": result.metrics,
        "ties": "pessimistic",
        "protocol_doc": "docs/protocol.md",
    }


def write_metrics(run_dir: Path, record: dict) -> Path:
    path = Path(run_dir) / "eval" / f"{record['split']}-{record['protocol']}.json"
    write_json(path, record)
    return path
