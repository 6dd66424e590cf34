"""Causal (dense) targets: one forward scores every history slot, and equals one forward per prefix."""

import numpy as np
import pytest
import torch

from slmrec_cli.config.models import PROMPTS, LLMRecConfig, check_prompt_for_targets
from slmrec_cli.data import load_dataset
from slmrec_cli.errors import SlmrecError
from slmrec_cli.models.build import build_model
from slmrec_cli.train.llm_task import LLMRecTask
from tests.helpers import make_dataset, run_cli

MAX_LEN = 8


def tiny_model(prompt: str = PROMPTS["items"], n_items: int = 30, seed: int = 0):
    torch.manual_seed(seed)
    table = torch.randn(n_items + 1, 16)
    cfg = LLMRecConfig(n_items=n_items, id_dim=16, hidden=0, layers=2, max_len=MAX_LEN, prompt=prompt, lora_r=4)
    model, _ = build_model(cfg, "tiny-random", table)
    return model.eval()  # no dropout: the invariant is exact up to float error


HISTORIES = [[3, 7, 9, 2, 11], [5, 6], [1, 8, 3, 7, 9, 2, 4], [12, 13, 14]]  # all shorter than max_len + 1


def windows(hists):
    """Left-padded [B, MAX_LEN + 1] windows, as the causal task builds them."""
    out = np.zeros((len(hists), MAX_LEN + 1), dtype=np.int64)
    for b, h in enumerate(hists):
        out[b, MAX_LEN + 1 - len(h):] = h
    w = torch.from_numpy(out)
    return w[:, :-1], w[:, 1:] * (w[:, :-1] != 0)


@pytest.mark.parametrize("prompt", [PROMPTS["items"], "A user's items, oldest first: {history}"])
def test_dense_loss_equals_the_mean_of_every_prefix_loss(prompt):
    model = tiny_model(prompt)
    items, targets = windows(HISTORIES)
    with torch.no_grad():
        dense = model(items, targets)
        prefix_losses = []
        for h in HISTORIES:
            for end in range(1, len(h)):
                x = torch.zeros(1, MAX_LEN, dtype=torch.long)
                x[0, MAX_LEN - end:] = torch.tensor(h[:end])
                prefix_losses.append(model(x, torch.tensor([h[end]])))
    assert len(prefix_losses) == int((targets != 0).sum())
    assert dense.item() == pytest.approx(torch.stack(prefix_losses).mean().item(), abs=1e-5)


def test_the_decoder_runs_once_per_batch():
    model = tiny_model()
    calls = []
    hook = model._base().layers[0].register_forward_hook(lambda *a: calls.append(1))
    items, targets = windows(HISTORIES)
    with torch.no_grad():
        model(items, targets)
    hook.remove()
    assert len(calls) == 1


def test_left_padding_does_not_change_the_dense_loss():
    model = tiny_model()
    items, targets = windows(HISTORIES)
    wider = torch.cat([torch.zeros(len(HISTORIES), 3, dtype=torch.long), items], 1)  # more padding on the left
    with torch.no_grad():
        a = model(items, targets)
        model.cfg.max_len = MAX_LEN + 3
        b = model(wider, torch.cat([torch.zeros_like(wider[:, :3]), targets], 1))
    assert a.item() == pytest.approx(b.item(), abs=1e-5)


def test_padding_never_enters_the_loss():
    """A padded slot's target is 0; changing what the padding holds changes nothing."""
    model = tiny_model()
    items, targets = windows(HISTORIES)
    with torch.no_grad():
        a = model(items, targets)
        model.id_table[0] = torch.randn(16) * 5  # the padding row's embedding feeds only padded slots
        b = model(items, targets)
    assert a.item() == pytest.approx(b.item(), abs=1e-5)


def test_the_causal_task_makes_every_training_item_a_target_once(tmp_path):
    data = load_dataset(make_dataset(tmp_path))
    task = LLMRecTask(tiny_model(n_items=data.n_items), data, "causal")
    batch = task.batch(np.arange(task.n_examples))
    assert batch["items"].shape == (task.n_examples, MAX_LEN) and batch["targets"].shape == batch["items"].shape
    n_targets = int((batch["targets"] != 0).sum())
    assert n_targets == sum(len(data.train_history(u)) - 1 for u in range(data.n_users))
    assert not ((batch["targets"] != 0) & (batch["items"] == 0)).any()


def test_text_after_the_history_is_refused_for_causal_targets():
    with pytest.raises(SlmrecError, match="--prompt instruction .*--targets causal.*end the prompt with"):
        check_prompt_for_targets(PROMPTS["instruction"], "causal")
    check_prompt_for_targets(PROMPTS["instruction"], "last")
    check_prompt_for_targets("Items: {history}", "causal")  # an instruction before the history is fine


def test_the_cli_refuses_the_combination_in_one_line(tmp_path, capsys):
    data = make_dataset(tmp_path)
    code, _, err = run_cli(["train-teacher", "--data", data, "--ids", tmp_path / "none", "--out", tmp_path / "t",
                            "--base-model", "tiny-random", "--prompt", "Items: {history}. Next?"], capsys)
    assert code == 2 and "--targets causal" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


# --- a history longer than max_len + 1: what holds across windows and micro-batches (docs/llm.md) -------------------

LONG = list(range(1, 21))  # 20 distinct items (an item is its position + 1), cut into windows of MAX_LEN + 1 = 9


class _OneUser:
    """What the causal task reads of a dataset: one user, whose training history is LONG."""

    n_users = 1

    def train_history(self, u: int) -> np.ndarray:
        return np.asarray(LONG)


def slot_inputs(items: torch.Tensor, targets: torch.Tensor) -> list[tuple[list[int], int]]:
    """(the items a real slot reads, the item it predicts) for every real slot of a batch of windows."""
    return [([x for x in row[: t + 1] if x], y) for row, ys in zip(items.tolist(), targets.tolist(), strict=True)
            for t, y in enumerate(ys) if y]


def test_a_long_history_gives_each_target_once_reading_only_its_window():
    task = LLMRecTask(tiny_model(), _OneUser(), "causal")
    batch = task.batch(np.arange(task.n_examples))
    slots = slot_inputs(batch["items"], batch["targets"])
    assert task.n_examples == 3  # items 12-20, 4-12, 1-4: cut from the end, overlapping by one
    assert sorted(y for _, y in slots) == LONG[1:]  # every item but the first is a target, once
    for read, y in slots:
        end = LONG.index(y)
        start = end - len(read)  # where the slot's window begins
        assert read == LONG[start:end]
        as_all = LONG[max(0, end - MAX_LEN) : end]  # what --targets all (one example per prefix) reads
        # the same input only at a window's last slot, or in the window that begins the history
        assert (read == as_all) == (len(read) == MAX_LEN or start == 0)
    model = task.model
    with torch.no_grad():
        dense = model(batch["items"], batch["targets"]).item()
        per_window_prefix = [model(torch.tensor([r]), torch.tensor([y])).item() for r, y in slots]
    # one forward over the windows = the mean of one forward per slot, each reading its window's items up to it
    assert dense == pytest.approx(np.mean(per_window_prefix), abs=1e-5)


def test_micro_batches_weigh_the_same_whatever_their_real_slots(tmp_path):
    """--grad-accum 2 over windows of 8 and 3 real slots: the step's gradient is the mean of the two micro-batch means,
    so a slot of the short window weighs 8/3 of a slot of the long one; one batch of both would weigh all 11 alike."""
    from slmrec_cli.config.train import TrainArgs
    from slmrec_cli.train.accelerator import make_accelerator
    from slmrec_cli.train.engine import _Fit

    task = LLMRecTask(tiny_model(), _OneUser(), "causal")
    model = task.model
    slots = [int((task.batch(np.array([i]))["targets"] != 0).sum()) for i in (0, 2)]
    assert slots == [8, 3]
    args = TrainArgs(batch_size=1, grad_accum=2, mixed_precision="no")
    loop = _Fit(task, args, tmp_path, make_accelerator(args), None)
    loop.epoch_len = 3
    loop.micro_batch(np.array([0]), False)
    assert loop.micro_batch(np.array([2]), False)[2]  # the step follows the second micro-batch
    engine = model.up.weight.grad.clone()

    def grad(loss) -> torch.Tensor:
        model.zero_grad()
        loss.backward()
        return model.up.weight.grad.clone()

    parts = [task.batch(np.array([i])) for i in (0, 2)]
    mean_of_means = grad(sum(model(b["items"], b["targets"]) for b in parts) / 2)
    both = task.batch(np.array([0, 2]))
    pooled = grad(model(both["items"], both["targets"]))
    assert torch.allclose(engine, mean_of_means, atol=1e-6, rtol=1e-4)
    assert not torch.allclose(engine, pooled, atol=1e-6, rtol=1e-2)
