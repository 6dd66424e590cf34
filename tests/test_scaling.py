"""Scaling pieces without launching processes: sharded epochs, the exact gather, gradient checkpointing, configs."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from slmrec_cli.config.models import LLMRecConfig
from slmrec_cli.distributed import gather_rows
from slmrec_cli.errors import SlmrecError
from slmrec_cli.models.build import build_model
from slmrec_cli.train.accelerator import check_parallelism
from slmrec_cli.train.engine import epoch_batches, optimizer_steps

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "accelerate"


@pytest.mark.parametrize("n", [1, 7, 60, 61, 63])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_every_process_gets_the_same_number_of_batches_and_all_examples(n, world):
    shards = [epoch_batches(n, 4, seed=1, epoch=2, rank=r, world=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1  # same step count everywhere, or DDP would wait forever
    assert len({tuple(len(b) for b in s) for s in shards}) == 1
    seen = np.concatenate([b for s in shards for b in s])
    assert set(seen.tolist()) == set(range(n)) and len(seen) == -(-n // world) * world
    if world == 1:  # one process: exactly the seeded permutation, as before
        assert seen.tolist() == np.random.default_rng([1, 2]).permutation(n).tolist()


def test_optimizer_steps_count_the_short_last_group():
    assert [optimizer_steps(n, 4) for n in (1, 4, 5, 8, 9)] == [1, 1, 2, 2, 3]


def test_each_optimizer_step_gets_the_mean_gradient_of_its_group(tmp_path):
    """--grad-accum 2 over 8-example micro-batches steps with the gradient of one 16-example batch, and the short last
    group (one micro-batch of 8) with that batch's own: the loss is scaled once, in engine._Fit.micro_batch."""
    from slmrec_cli.config.train import TrainArgs
    from slmrec_cli.train.engine import fit

    x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
    y = torch.randn(40, 1, generator=torch.Generator().manual_seed(1))

    class Regression:
        n_examples = 40
        lengths = np.ones(40, dtype=np.int64)

        def __init__(self):
            torch.manual_seed(0)
            self.model = torch.nn.Linear(3, 1)
            self.grads = []  # the weight's gradient after each micro-batch's backward
            self.model.weight.register_post_accumulate_grad_hook(lambda p: self.grads.append(p.grad.clone()))

        def batch(self, indices):
            return {"x": x[indices], "y": y[indices]}

        def loss(self, model, batch):
            return ((model(batch["x"]) - batch["y"]) ** 2).mean(), {}

        def validate(self, model):
            return {"sampled": SimpleNamespace(metrics={"MRR": 0.0})}

        def save_best(self, model, run_dir):
            pass

    runs = {}
    for batch_size, accum in ((16, 1), (8, 2)):
        task, run_dir = Regression(), tmp_path / f"accum{accum}"
        run_dir.mkdir()
        fit(task, TrainArgs(epochs=1, batch_size=batch_size, grad_accum=accum, grad_clip=0.0, seed=3), run_dir)
        runs[accum] = task.grads
    assert len(runs[1]) == 3 and len(runs[2]) == 5  # steps over 16, 16, 8 examples; micro-batches 8+8, 8+8, 8
    for whole, accumulated in zip(runs[1], [runs[2][i] for i in (1, 3, 4)], strict=True):
        assert torch.allclose(whole, accumulated, rtol=1e-6, atol=1e-7)


class FakeState:
    """Two processes' rows as accelerate's pad_across_processes + gather would return them."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self, other_rows):
        self.other_rows = other_rows


def test_gather_rows_drops_padding_and_duplicates_and_keeps_the_callers_order(monkeypatch):
    import accelerate.utils

    mine = np.array([[3, 30], [1, 10]])
    other = np.array([[2, 20], [1, 10], [-1, -1]])  # a duplicate of user 1 and a padding row
    monkeypatch.setattr(accelerate.utils, "pad_across_processes", lambda t, **kw: t)
    monkeypatch.setattr(accelerate.utils, "gather", lambda t: torch.cat([t, torch.as_tensor(other)]))
    rows = gather_rows(FakeState(other), mine, np.array([2, 1, 3]))
    assert rows.tolist() == [[2, 20], [1, 10], [3, 30]]
    with pytest.raises(RuntimeError, match="expected 4"):  # a missing user is never silently skipped
        gather_rows(FakeState(other), mine, np.array([0, 1, 2, 3]))


@pytest.mark.parametrize("kind", ["FSDP", "DEEPSPEED"])
def test_sharded_engines_are_refused_in_one_line(kind):
    with pytest.raises(SlmrecError, match="DDP") as info:
        check_parallelism(SimpleNamespace(distributed_type=SimpleNamespace(name=kind)))
    assert "\n" not in str(info.value)
    check_parallelism(SimpleNamespace(distributed_type=SimpleNamespace(name="MULTI_GPU")))


def test_gradient_checkpointing_saves_memory_not_numbers():
    """Same loss and gradients with and without recomputation (non-reentrant, dropout RNG restored)."""
    cfg = LLMRecConfig(n_items=30, id_dim=8, hidden=0, layers=2, max_len=6, lora_r=4, lora_alpha=8)
    table = torch.randn(31, 8, generator=torch.Generator().manual_seed(0))
    items = torch.tensor([[0, 1, 2, 3, 4, 5], [0, 0, 7, 8, 9, 10]])
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model, _ = build_model(cfg, "tiny-random", table, gradient_checkpointing=checkpointing)
        assert cfg.hidden == 0 and model.cfg.hidden == 64  # the model's own config: the caller's is left as it was
        base = model._base()
        assert getattr(base, "is_activation_checkpointing", None) is checkpointing or \
            base.is_gradient_checkpointing is checkpointing
        model.train()
        torch.nn.init.normal_(model.decoder.base_model.model.layers[0].mlp.up_proj.lora_B.default.weight)
        loss = model(items, torch.tensor([6, 11]))
        loss.backward()
        results.append((loss.item(), {n: p.grad for n, p in model.named_parameters() if p.requires_grad}))
    (loss_a, grads_a), (loss_b, grads_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-6)
    assert grads_a.keys() == grads_b.keys()
    for name in grads_a:
        assert torch.allclose(grads_a[name], grads_b[name], atol=1e-6), name


def test_accelerate_configs_load_and_slmrec_accepts_those_not_marked_refused():
    """Each shipped recipe is a config accelerate itself loads (no unknown keys), and slmrec's trainers accept exactly
    those whose header does not say NOT YET ACCEPTED (fsdp8.yaml: FSDP is refused until the trainers gather shards)."""
    from accelerate.commands.config.config_args import ClusterConfig

    accepted = {}
    for path in sorted(EXAMPLES.glob("*.yaml")):
        cfg = ClusterConfig.from_yaml_file(path)
        try:
            check_parallelism(cfg)
            accepted[path.name] = True
        except SlmrecError:
            accepted[path.name] = False
        marked = "NOT YET ACCEPTED" in path.read_text()
        assert accepted[path.name] != marked, f"{path.name}: accepted {accepted[path.name]}, marked refused {marked}"
    assert accepted == {"ddp8.yaml": True, "fsdp8.yaml": False, "single_gpu.yaml": True}
    ddp = ClusterConfig.from_yaml_file(EXAMPLES / "ddp8.yaml")
    assert ddp.distributed_type.name == "MULTI_GPU" and ddp.num_processes == 8
    assert ClusterConfig.from_yaml_file(EXAMPLES / "single_gpu.yaml").num_processes == 1
