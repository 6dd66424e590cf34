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
