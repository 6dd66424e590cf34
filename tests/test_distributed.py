"""Two processes under torchrun (gloo, CPU): one set of artifacts, the same numbers as one process, Ctrl-C + resume."""

import json
import signal
import subprocess

import pytest
import torch

from slmrec_cli.distill.cache import FEATURES, META
from tests.helpers import cli_command, cli_env, eval_records, make_dataset, run_cli, run_subprocess, wait_for_file

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch built without distributed")

# 120 windows → 60 per process → batches of 16, 16, 16, 12 → 2 optimizer steps per epoch with --grad-accum 2
SASREC = ["--dim", "16", "--layers", "1", "--heads", "2", "--max-len", "8", "--batch-size", "16", "--grad-accum", "2",
          "--epochs", "30", "--patience", "100", "--lr", "0.005"]
TEACHER = ["--base-model", "tiny-random", "--layers", "4", "--max-len", "8", "--lora-r", "4", "--lora-alpha", "8",
           "--batch-size", "8", "--eval-batch", "16", "--lr", "0.005"]


def test_shutdown_leaves_the_process_group(tmp_path):
    """The CLI leaves the group before exiting: a gloo process exiting inside one can abort at teardown."""
    import torch.distributed as dist

    from slmrec_cli.distributed import shutdown

    shutdown(wait=True)  # no group joined: nothing to do
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    assert dist.is_initialized()
    shutdown(wait=True)
    assert not dist.is_initialized()


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("mp"))


@pytest.fixture(scope="module")
def sasrec2(tiny):
    """SASRec trained by two processes."""
    out = tiny.parent / "sasrec2"
    proc = ok(run_subprocess(["pretrain-ids", "--data", tiny, "--out", out, *SASREC], nproc=2))
    return out, proc


def one_set_of_artifacts(run, proc, validations: int) -> dict:
    names = {p.name for p in run.iterdir()}
    assert not {n for n in names if n.endswith((".tmp", ".old"))}, names  # nothing half-written left behind
    assert {"config.json", "checksums.json", "checkpoint", "efficiency.json", "train_log.jsonl"} <= names
    assert sorted(p.name for p in (run / "eval").iterdir()) == [
        "test-full.json", "test-sampled.json", "valid-full.json", "valid-sampled.json"]
    logs = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    valid_steps = [x["step"] for x in logs if x["event"] == "valid"]
    assert len(valid_steps) == validations and valid_steps == sorted(set(valid_steps))  # written once, not per rank
    assert proc.stderr.count("epoch 1 step") == 1  # one process speaks
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["processes"] == 2
    assert cfg["effective_batch_size"] == cfg["train"]["batch_size"] * cfg["train"]["grad_accum"] * 2
    return cfg


def test_two_processes_train_sasrec_once(sasrec2):
    run, proc = sasrec2
    one_set_of_artifacts(run, proc, validations=30)
    logs = [json.loads(x) for x in (run / "train_log.jsonl").read_text().splitlines()]
    assert [x["step"] for x in logs if x["event"] == "valid"][:2] == [2, 4]  # each process took its half
    assert proc.stdout.count(f"SASRec {run}") == 1


def test_two_process_evaluation_equals_one_process(sasrec2, capsys):
    run, _ = sasrec2
    trained = eval_records(run)  # written at the end of the 2-process training, 256 users per batch
    code, out, err = run_cli(["evaluate", run, "--split", "valid", "--json"], capsys)
    assert code == 0, err
    code, out, err = run_cli(["evaluate", run, "--split", "test", "--json"], capsys)
    assert code == 0, err
    assert eval_records(run) == trained
    # 60 users in batches of 7: 9 batches, 5 on one process and 4 on the other (uneven, so padding is dropped)
    argv = ["evaluate", run, "--protocol", "both", "--eval-batch", "7", "--popularity", "--json"]
    two = ok(run_subprocess(argv, nproc=2))
    code, one, err = run_cli(argv, capsys)
    assert code == 0, err
    assert two.stdout == one  # every digit
    assert [x["users"] for x in json.loads(one)] == [60] * 4


def test_two_processes_ctrl_c_then_resume_matches_uninterrupted(sasrec2, tiny):
    run, _ = sasrec2
    cut = tiny.parent / "cut2"
    proc = subprocess.Popen(cli_command(["pretrain-ids", "--data", tiny, "--out", cut, *SASREC], nproc=2),
                            env=cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_file(cut / "checkpoint" / "state.json", proc)
        proc.send_signal(signal.SIGINT)  # torchrun passes it on to both workers, as a terminal's Ctrl-C does
        _, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode != 0, "the run finished before the interrupt; it cannot test resuming"
    assert "interrupted: stopped at step" in err
    assert not (cut / "eval" / "test-sampled.json").exists()
    stopped = json.loads((cut / "checkpoint" / "state.json").read_text())["step"]
    assert 0 < stopped < 60
    ok(run_subprocess(["pretrain-ids", "--data", tiny, "--out", cut, *SASREC, "--resume"], nproc=2))
    assert eval_records(cut) == eval_records(run)
    # the log too: every loss and validation as in the uninterrupted run, none written twice
    assert (cut / "train_log.jsonl").read_text() == (run / "train_log.jsonl").read_text()


def test_two_processes_train_teacher_and_distill(sasrec2, tiny, capsys):
    ids, _ = sasrec2
    teacher = tiny.parent / "t2"
    proc = ok(run_subprocess(["train-teacher", "--data", tiny, "--ids", ids, "--out", teacher, *TEACHER,
                              "--epochs", "2", "--gradient-checkpointing"], nproc=2))
    cfg = one_set_of_artifacts(teacher, proc, validations=2)
    assert cfg["gradient_checkpointing"] is True
    student = tiny.parent / "s2"
    cache = tiny.parent / "cache2"
    # λ3 = 0: the multi-supervision adapters are not built, so DDP sees no parameter without a gradient
    proc = ok(run_subprocess(["distill", "--teacher", teacher, "--out", student, "--student-layers", "2", "--blocks",
                              "2", "--lambda-ms", "0", "--teacher-cache", cache, "--epochs", "1", "--batch-size", "8",
                              "--eval-batch", "16"], nproc=2))
    one_set_of_artifacts(student, proc, validations=1)
    assert not (student / "ms_adapters.safetensors").exists()
    assert sorted(p.name for p in cache.iterdir()) == sorted([META, FEATURES])
    # each process built its share of the cache into the one file: the same bytes as one process builds
    one = tiny.parent / "cache1"
    code, _, err = run_cli(["distill", "--teacher", teacher, "--out", tiny.parent / "s1", "--student-layers", "2",
                            "--blocks", "2", "--lambda-ms", "0", "--teacher-cache", one, "--epochs", "1",
                            "--batch-size", "8", "--eval-batch", "16"], capsys)
    assert code == 0, err
    assert (one / FEATURES).read_bytes() == (cache / FEATURES).read_bytes()
    for run in (teacher, student):  # what two processes wrote is what one process computes
        written = eval_records(run)
        for split in ("valid", "test"):
            code, _, err = run_cli(["evaluate", run, "--split", split, "--eval-batch", "16"], capsys)
            assert code == 0, err
        assert eval_records(run) == written
