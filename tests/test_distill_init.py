"""Online and offline distillation at the same seed start from the same student: the comparison is paired at init."""

import torch

from slmrec_cli.config.train import TrainArgs
from slmrec_cli.models.build import ID_TABLE, build_model
from slmrec_cli.runs import Run
from tests.helpers import student_run

SEED = 7


def initial_weights(t4, out, monkeypatch, mode: str) -> dict[str, dict[str, torch.Tensor]]:
    """The student's, L_ms adapters' and (online) teacher's weights as `distill` hands them to training."""
    import slmrec_cli.stages.distill as stage

    seen = {}

    def capture(acc, run, config, task, *a, **k):
        model = task.model
        parts = {"student": model.student, "ms_adapters": model.ms_adapters}
        if mode == "online":
            parts["teacher"] = model.teacher
        seen.update({name: {k: v.detach().clone() for k, v in m.state_dict().items()} for name, m in parts.items()})
        return {}

    monkeypatch.setattr(stage, "train_llm_run", capture)
    student_run(t4, out, 2, TrainArgs(epochs=1, batch_size=16, seed=SEED), blocks=2, mode=mode)
    return seen


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_online_and_offline_students_start_from_the_same_weights(tiny_runs, tmp_path, monkeypatch):
    _, _, t4 = tiny_runs
    offline = initial_weights(t4, tmp_path / "off", monkeypatch, "offline")
    online = initial_weights(t4, tmp_path / "on", monkeypatch, "online")
    assert same(offline["student"], online["student"])  # bitwise, LoRA and projections
    assert same(offline["ms_adapters"], online["ms_adapters"]) and len(offline["ms_adapters"])
    # the online teacher starts where it always did: a fresh model right after seeding, as train-teacher's
    teacher = Run.load(t4)
    torch.manual_seed(SEED)
    fresh, _ = build_model(teacher.llm_model, teacher.llm_base, teacher.weights(ID_TABLE)["item_embeddings"],
                           expect_hash=teacher.llm_base.hash)
    assert same(fresh.state_dict(), online["teacher"])
