"""Every artifact a later stage loads is checked: damaged, missing, altered or foreign files give one line, exit 2."""

import json
import shutil

import pytest
import torch
from safetensors.torch import save_file

from tests.helpers import TEACHER_TINY, make_dataset, run_cli


@pytest.fixture(scope="module")
def teacher(tiny_runs):
    return tiny_runs


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def flip(path):
    """Same length, one payload byte changed: safetensors still parses it, only the checksum can tell."""
    data = bytearray(path.read_bytes())
    data[-5] ^= 0xFF
    path.write_bytes(bytes(data))


def garbage(path):
    path.write_text("{not json")


def edit_json(change):
    def apply(path):
        path.write_text(json.dumps(change(json.loads(path.read_text()))))
    return apply


def one_line_exit_2(argv, capsys, *words):
    code, _, err = run_cli(["-q", *argv], capsys)  # --quiet: what is left on stderr is the error
    assert code == 2, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for word in words:
        assert word in err, err
    return err


def copy_run(run, tmp_path, name="run"):
    out = tmp_path / name
    shutil.copytree(run, out)
    return out


DAMAGE = [
    ("adapter/adapter_model.safetensors", truncate, "adapter_model.safetensors"),
    ("adapter/adapter_model.safetensors", flip, "sha256"),
    ("adapter/adapter_config.json", lambda p: p.unlink(), "adapter_config.json is missing"),
    ("adapter/adapter_config.json", edit_json(lambda c: {**c, "r": 8}), "sha256"),
    ("projections.safetensors", truncate, "projections.safetensors"),
    ("projections.safetensors", flip, "sha256"),
    ("projections.safetensors", lambda p: p.unlink(), "projections.safetensors is missing"),
    ("item_embeddings.safetensors", truncate, "item_embeddings.safetensors"),
    ("item_embeddings.safetensors", flip, "sha256"),
    ("config.json", garbage, "not valid JSON"),
    ("config.json", edit_json(lambda c: {**c, "format_version": 99}), "newer slmrec"),
    ("config.json", edit_json(lambda c: {k: v for k, v in c.items() if k != "data"}), "'data'"),
    ("config.json", edit_json(lambda c: {**c, "model": {**c["model"], "colour": 1}}), "model section"),
    ("config.json", edit_json(lambda c: {**c, "base_model": {**c["base_model"], "hash": "0" * 64}}), "base model"),
    ("checksums.json", garbage, "checksums.json is damaged"),
]


@pytest.mark.parametrize("name, damage, word", DAMAGE, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(DAMAGE)])
def test_damaged_teacher_run_is_refused(teacher, tmp_path, capsys, name, damage, word):
    _, _, run = teacher
    broken = copy_run(run, tmp_path)
    damage(broken / name)
    one_line_exit_2(["evaluate", broken, "--protocol", "sampled"], capsys, word)


def test_runs_without_checksums_still_get_checked(teacher, tmp_path, capsys):
    """A run written before checksums existed still gets its files parsed and its shapes checked."""
    _, _, run = teacher
    broken = copy_run(run, tmp_path)
    (broken / "checksums.json").unlink()
    save_file({"up.weight": torch.zeros(3, 3), "up.bias": torch.zeros(3), "down.weight": torch.zeros(3, 3),
               "down.bias": torch.zeros(3)}, str(broken / "projections.safetensors"))
    one_line_exit_2(["evaluate", broken], capsys, "projections.safetensors does not match")
    shutil.copy(run / "projections.safetensors", broken / "projections.safetensors")
    save_file({"item_embeddings": torch.zeros(5, 16)}, str(broken / "item_embeddings.safetensors"))
    one_line_exit_2(["evaluate", broken], capsys, "item_embeddings.safetensors holds (5, 16)")
    shutil.copy(run / "item_embeddings.safetensors", broken / "item_embeddings.safetensors")
    edit_json(lambda c: {**c, "r": 8})(broken / "adapter" / "adapter_config.json")  # LoRA factors of rank 4 on disk
    one_line_exit_2(["evaluate", broken], capsys, "not a usable LoRA adapter")
    shutil.copy(run / "adapter" / "adapter_config.json", broken / "adapter" / "adapter_config.json")
    truncate(broken / "adapter" / "adapter_model.safetensors")
    one_line_exit_2(["evaluate", broken], capsys, "not a usable LoRA adapter")
    garbage(broken / "adapter" / "adapter_config.json")
    one_line_exit_2(["evaluate", broken], capsys, "not a usable LoRA adapter")


def test_damaged_teacher_is_refused_by_distill_and_probe(teacher, tmp_path, capsys):
    _, _, run = teacher
    broken = copy_run(run, tmp_path)
    flip(broken / "adapter" / "adapter_model.safetensors")
    one_line_exit_2(["distill", "--teacher", broken, "--out", tmp_path / "s", "--student-layers", "2", "--blocks",
                     "2", "--epochs", "1"], capsys, "sha256")
    assert not (tmp_path / "s").exists()
    one_line_exit_2(["prune-probe", broken], capsys, "sha256")


def test_damaged_id_table_is_refused_by_train_teacher(teacher, tmp_path, capsys):
    data, sasrec, _ = teacher
    ids = copy_run(sasrec, tmp_path, "ids")
    flip(ids / "item_embeddings.safetensors")
    argv = ["train-teacher", "--data", data, "--ids", ids, "--out", tmp_path / "t", "--base-model", "tiny-random",
            "--layers", "2", "--epochs", "1"]
    one_line_exit_2(argv, capsys, "item_embeddings.safetensors", "sha256")
    truncate(ids / "item_embeddings.safetensors")
    (ids / "checksums.json").unlink()
    one_line_exit_2(argv, capsys, "item_embeddings.safetensors", "truncated")
    assert not (tmp_path / "t").exists()


def test_teacher_run_on_other_data_is_refused(teacher, tmp_path, capsys):
    _, _, run = teacher
    other = make_dataset(tmp_path, name="other", seed=3)
    one_line_exit_2(["evaluate", run, "--data", other], capsys, "trained on data")


def resume_argv(teacher, run):
    data, sasrec, _ = teacher
    opts = {**TEACHER_TINY, "lora_r": 4}
    return ["train-teacher", "--data", data, "--ids", sasrec, "--out", run, "--base-model", "tiny-random",
            "--epochs", "1", "--batch-size", "16", "--lr", "0.005", "--warmup-ratio", "0.02", "--resume",
            *[x for k, v in opts.items() for x in (f"--{k.replace('_', '-')}", v)]]


CHECKPOINT_DAMAGE = [
    ("checkpoint/trainable.safetensors", truncate, "sha256"),
    ("checkpoint/optimizer.safetensors", flip, "sha256"),
    ("checkpoint/rng.safetensors", lambda p: p.unlink(), "rng.safetensors"),
    ("checkpoint/state.json", garbage, "unreadable"),
    ("checkpoint/state.json", edit_json(lambda s: {**s, "world_size": 2}), "2 process(es)"),
    ("checkpoint/state.json", edit_json(lambda s: {k: v for k, v in s.items() if k != "step"}), "incomplete"),
    ("checkpoint/state.json", edit_json(lambda s: [s]), "unreadable"),
]


@pytest.mark.parametrize("name, damage, word", CHECKPOINT_DAMAGE,
                         ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(CHECKPOINT_DAMAGE)])
def test_damaged_checkpoint_is_refused_on_resume(teacher, tmp_path, capsys, name, damage, word):
    _, _, run = teacher
    broken = copy_run(run, tmp_path)
    damage(broken / name)
    one_line_exit_2(resume_argv(teacher, broken), capsys, word)


def test_resume_with_other_model_options_is_refused(teacher, tmp_path, capsys):
    _, _, run = teacher
    broken = copy_run(run, tmp_path)
    argv = resume_argv(teacher, broken)
    argv[argv.index("--lora-r") + 1] = "8"
    one_line_exit_2(argv, capsys, "lora-r 4 → 8")


def test_resume_lists_every_changed_option_and_allows_only_length_and_logging(teacher, tmp_path, capsys):
    """Another --lr or λ used to continue silently and rewrite config.json: now each difference is named, and the
    run is left as it was; more --epochs or another --patience is a plain resume."""
    _, _, run = teacher
    broken = copy_run(run, tmp_path)
    before = (broken / "config.json").read_text()
    argv = resume_argv(teacher, broken)
    argv[argv.index("--lr") + 1] = "0.001"
    argv[argv.index("--warmup-ratio") + 1] = "0.1"
    one_line_exit_2(argv, capsys, "lr 0.005 → 0.001", "warmup-ratio 0.02 → 0.1")
    assert (broken / "config.json").read_text() == before
    longer = resume_argv(teacher, copy_run(run, tmp_path, "longer"))
    longer[longer.index("--epochs") + 1] = "3"
    code, _, err = run_cli([*longer, "--patience", "4"], capsys)
    assert code == 0, err


def test_resume_compares_only_what_the_old_run_records():
    from slmrec_cli.run_dirs import resume_changes

    old = {"created": "then", "train": {"lr": 0.001, "epochs": 3}, "distill": {"lambda_cos": 1.0}}
    new = {"created": "now", "train": {"lr": 0.001, "epochs": 6}, "distill": {"lambda_cos": 1.0, "lambda_kd": 0.0}}
    assert resume_changes(old, new) == ([], ["distill.lambda_kd"])  # more epochs is fine; lambda_kd is newer
    assert resume_changes(old, {**new, "train": {"lr": 0.002, "epochs": 3}})[0] == ["lr 0.001 → 0.002"]
