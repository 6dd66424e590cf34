"""Killed runs resume to the same numbers; Ctrl-C saves and exits 130; the same seed gives the same files."""

import json
import signal
import subprocess

import pytest

from slmrec_cli.config.train import TrainArgs
from tests.helpers import (
    SASREC_TINY,
    TEACHER_TINY,
    cli_command,
    cli_env,
    eval_records,
    make_dataset,
    run_cli,
    run_subprocess,
    sasrec_run,
    teacher_run,
)

# 30 epochs of 8 steps: long enough that the first checkpoint appears well before the end
SASREC = ["--dim", "16", "--layers", "1", "--heads", "2", "--max-len", "8", "--batch-size", "16", "--epochs", "30",
          "--patience", "100", "--lr", "0.005", "--seed", "7"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("crash"))


@pytest.fixture(scope="module")
def uninterrupted(tiny):
    out = tiny.parent / "full"
    proc = run_subprocess(["pretrain-ids", "--data", tiny, "--out", out, *SASREC])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def start_then_signal(tiny, out, sig) -> tuple[int, str]:
    """Start `pretrain-ids` in a subprocess, send `sig` once its first checkpoint exists; (exit code, stderr)."""
    from tests.helpers import wait_for_file

    proc = subprocess.Popen(cli_command(["pretrain-ids", "--data", tiny, "--out", out, *SASREC]), env=cli_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(out / "checkpoint" / "state.json", proc)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "the run finished before the signal; it cannot test resuming"
    return proc.returncode, err


def test_sigkill_then_resume_matches_uninterrupted(tiny, uninterrupted):
    out = tiny.parent / "killed"
    code, _ = start_then_signal(tiny, out, signal.SIGKILL)
    assert code == -signal.SIGKILL
    assert not (out / "eval" / "test-sampled.json").exists()
    proc = run_subprocess(["pretrain-ids", "--data", tiny, "--out", out, *SASREC, "--resume"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "resumed" in proc.stderr
    assert eval_records(out) == eval_records(uninterrupted)
    assert (out / "train_log.jsonl").read_text() == (uninterrupted / "train_log.jsonl").read_text()


@pytest.mark.parametrize(("sig", "exit_code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_or_sigterm_saves_a_checkpoint_and_exits(tiny, uninterrupted, capsys, sig, exit_code):
    """Ctrl-C, and the SIGTERM a scheduler sends before it kills a job: a checkpoint, one line, 128 + the signal."""
    out = tiny.parent / f"stopped-{sig.name}"
    code, err = start_then_signal(tiny, out, sig)
    assert code == exit_code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted: stopped at step") and "--resume" in last
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert 0 < state["step"] < 240
    assert not (out / "eval" / "test-sampled.json").exists()
    code, _, err = run_cli(["pretrain-ids", "--data", tiny, "--out", out, *SASREC, "--resume"], capsys)
    assert code == 0, err
    assert eval_records(out) == eval_records(uninterrupted)


def test_same_seed_gives_identical_metrics_files(tiny):
    args = TrainArgs(epochs=3, batch_size=16, lr=5e-3, seed=11, log_every=1)
    for name in ("a", "b"):
        sasrec_run(tiny, tiny.parent / f"same-{name}", SASREC_TINY, args)
    a, b = tiny.parent / "same-a", tiny.parent / "same-b"
    assert eval_records(a) == eval_records(b) and len(eval_records(a)) == 4
    assert (a / "train_log.jsonl").read_text() == (b / "train_log.jsonl").read_text()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    other = sasrec_run(tiny, tiny.parent / "same-c", SASREC_TINY, TrainArgs(**{**args.__dict__, "seed": 12}))
    assert other["records"][0]["metrics"] != json.loads((a / "eval/valid-sampled.json").read_text())["metrics"]


def test_same_seed_gives_identical_teacher_metrics(tiny):
    sasrec_run(tiny, tiny.parent / "ids", SASREC_TINY, TrainArgs(epochs=1, batch_size=32, seed=3))
    args = TrainArgs(epochs=1, batch_size=16, lr=5e-3, seed=5, log_every=1)
    for name in ("a", "b"):
        teacher_run(tiny, tiny.parent / "ids", "tiny-random", tiny.parent / f"teacher-{name}", TEACHER_TINY, args)
    a, b = tiny.parent / "teacher-a", tiny.parent / "teacher-b"
    assert eval_records(a) == eval_records(b) and len(eval_records(a)) == 4
    assert (a / "train_log.jsonl").read_text() == (b / "train_log.jsonl").read_text()


def test_killed_before_its_first_checkpoint_starts_again(tiny):
    """No checkpoint yet (killed during the first epoch): --resume starts from step 0 and drops the old log lines."""
    args = TrainArgs(epochs=2, batch_size=16, lr=5e-3, seed=4, log_every=1)
    sasrec_run(tiny, tiny.parent / "early-full", SASREC_TINY, args)

    def die(step):
        if step == 3:
            raise RuntimeError("simulated crash")

    with pytest.raises(RuntimeError):
        sasrec_run(tiny, tiny.parent / "early", SASREC_TINY, args, on_step=die)
    assert not (tiny.parent / "early" / "checkpoint").exists()
    sasrec_run(tiny, tiny.parent / "early", SASREC_TINY, args, resume=True)
    assert eval_records(tiny.parent / "early") == eval_records(tiny.parent / "early-full")
    assert (tiny.parent / "early" / "train_log.jsonl").read_text() == \
        (tiny.parent / "early-full" / "train_log.jsonl").read_text()


def test_kill_between_the_checkpoint_renames_keeps_the_previous_one(tmp_path):
    from slmrec_cli.train.checkpoint import recover_checkpoint

    old = tmp_path / ".checkpoint.old"  # what a kill between the two os.replace calls leaves
    old.mkdir()
    (old / "state.json").write_text("{}")
    recover_checkpoint(tmp_path)
    assert (tmp_path / "checkpoint" / "state.json").exists() and not old.exists()


def test_a_checkpoint_lacking_a_later_state_field_resumes_with_its_default(tmp_path):
    """The trainer state round-trips through a checkpoint; one written before a later TrainState field existed
    (epochs_done came with --max-steps) resumes with its default, one without an always-saved field is refused."""
    import torch

    from slmrec_cli.errors import SlmrecError
    from slmrec_cli.train.checkpoint import CKPT, STATE, TrainState, load_checkpoint, save_checkpoint

    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    saved = TrainState(epoch=2, step=7, best_mrr=0.5, best_step=6, epochs_done=2, history=[{"step": 6}])
    save_checkpoint(tmp_path, model, optimizer, scheduler, saved)
    assert load_checkpoint(tmp_path, model, optimizer, scheduler) == saved
    path = tmp_path / CKPT / STATE
    state = json.loads(path.read_text())
    path.write_text(json.dumps({k: v for k, v in state.items() if k != "epochs_done"}))
    assert load_checkpoint(tmp_path, model, optimizer, scheduler).epochs_done == 0
    path.write_text(json.dumps({k: v for k, v in state.items() if k != "bad_evals"}))
    with pytest.raises(SlmrecError, match="incomplete \\(no bad_evals\\)"):
        load_checkpoint(tmp_path, model, optimizer, scheduler)


def test_resume_is_exact_with_a_short_last_accumulation_group(tiny):
    """8 micro-batches per epoch in groups of 3: steps of 3, 3 and 2; stop mid-epoch, resume, same numbers."""
    from slmrec_cli.errors import Interrupted
    from slmrec_cli.train import engine

    args = TrainArgs(epochs=3, batch_size=16, grad_accum=3, lr=5e-3, seed=6, log_every=1)
    sasrec_run(tiny, tiny.parent / "accum-full", SASREC_TINY, args)

    def stop(step):
        if step == 4:
            engine.request_stop()

    with pytest.raises(Interrupted):
        sasrec_run(tiny, tiny.parent / "accum-cut", SASREC_TINY, args, on_step=stop)
    sasrec_run(tiny, tiny.parent / "accum-cut", SASREC_TINY, args, resume=True)
    assert eval_records(tiny.parent / "accum-cut") == eval_records(tiny.parent / "accum-full")
    log = (tiny.parent / "accum-full" / "train_log.jsonl").read_text()
    assert log == (tiny.parent / "accum-cut" / "train_log.jsonl").read_text()
    assert [json.loads(x)["step"] for x in log.splitlines() if '"valid"' in x] == [3, 6, 9]


def test_a_non_finite_loss_stops_training_with_one_line(tmp_path):
    """The loss is read on the host only every log_every steps (no device sync per step), yet divergence still stops
    the run before anything is validated or saved."""
    import numpy as np
    import torch

    from slmrec_cli.config.train import SASRecTrain
    from slmrec_cli.errors import SlmrecError
    from slmrec_cli.train.engine import fit

    class Diverging:
        model = torch.nn.Linear(1, 1)
        n_examples = 40
        lengths = np.ones(40, dtype=np.int64)
        calls = 0

        def batch(self, indices):
            return {"x": torch.ones(len(indices), 1)}

        def loss(self, model, batch):
            Diverging.calls += 1
            scale = float("nan") if Diverging.calls >= 3 else 1.0
            return model(batch["x"]).mean() * scale, {}

        def validate(self, model):
            raise AssertionError("a diverged model must not be validated")

        def save_best(self, model, run_dir):
            raise AssertionError("a diverged model must not be saved")

    args = SASRecTrain(epochs=2, batch_size=4, log_every=5)
    with pytest.raises(SlmrecError, match="diverged .* by step 5"):
        fit(Diverging(), args, tmp_path)
