"""Once per run, before the test split is read: the reloaded selected weights reproduce the validation MRR the live
model had when it was selected. The valid metrics come from the live training model, the test metrics from the files;
this ties the two together, and a run whose files do not hold the model that was validated stops, unfinished."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.evaluate import PROTOCOLS, eval_batches, rank_split

CHECK_USERS = 512  # about this many validation users, in whole batches of the live validation


def check_users(data, batch_size: int, max_len: int, n: int = CHECK_USERS) -> np.ndarray:
    """Ascending ids of about n validation users: whole batches of the live validation, evenly spaced along its
    length order (short and long histories both), so rank_split cuts them into the very batches the live model
    scored (the same padding and packing, hence the same numbers on the same device). All users when n covers them."""
    batches = eval_batches(data, "valid", np.arange(data.n_users), batch_size, max_len)
    if not batches:
        return np.zeros(0, dtype=np.int64)
    k = min(len(batches), -(-n // len(batches[0])))
    pick = np.unique(np.linspace(0, len(batches) - 1, k).round().astype(int))
    return np.sort(np.concatenate([batches[i] for i in pick]))


def tolerance(n_users: int) -> float:
    """How far the two MRRs may differ: half of one user's reciprocal rank, what a single near-tie flipped by float
    reordering can move (rank 0 → 1). On the CPU the checked batches are the live ones and the scores bitwise equal."""
    return 0.5 / max(1, n_users)


def _mrr(ranks: np.ndarray) -> float:
    return float(np.mean(1.0 / (ranks + 1))) if len(ranks) else 0.0


def check_reload(model, data, run_dir: Path, *, best_mrr: float, best_step: int, best_valid: dict | None,
                 batch_size: int, max_len: int, device) -> dict:
    """Score validation with the reloaded `model` and compare; returns the valid results evaluate_and_record reuses.

    With the live results of the selected step (best_valid): the CHECK_USERS users of check_users, against the live
    ranks of the same users. Without them (the step was validated before a --resume): the whole split, against the
    recorded best MRR; that pass is the run's valid record, so it costs nothing extra."""
    model.eval()
    if best_valid is not None:
        users = check_users(data, batch_size, max_len)
        ranks = rank_split(model.score_all, data, "valid", ("sampled",), max_len=max_len, batch_size=batch_size,
                           users=users, device=device, desc="reload check")["sampled"].ranks
        live = best_valid["sampled"]
        live_ranks = live.ranks[np.searchsorted(live.user_ids, users)]
        expected, moved, valid = _mrr(live_ranks), int((ranks != live_ranks).sum()), best_valid
    else:
        valid = rank_split(model.score_all, data, "valid", PROTOCOLS, max_len=max_len, batch_size=batch_size,
                           device=device, desc="eval valid")
        users, ranks, expected, moved = valid["sampled"].user_ids, valid["sampled"].ranks, best_mrr, None
    got = _mrr(ranks)
    if abs(got - expected) > tolerance(len(users)):
        moved_text = f", {moved} ranked differently" if moved is not None else ""
        raise SlmrecError(f"{run_dir}: the reloaded weights give validation MRR {got:.6f} on {len(users)} users, the "
                          f"model selected at step {best_step} gave {expected:.6f}{moved_text} (tolerance "
                          f"{tolerance(len(users)):.1e}); the saved model is not the one validated, so the test split "
                          "was not scored: check the run's files and retrain it (--force)")
    return valid
