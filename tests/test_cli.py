"""The CLI as a Unix tool: exit codes, one-line errors, nothing half-written, config files, metrics contract."""

import errno
import json
import subprocess
import sys

import numpy as np
import pytest

from slmrec_cli.evaluation.ranking import METRIC_NAMES
from tests.helpers import make_dataset, run_cli, sasrec_run

TINY_MODEL = ["--dim", "16", "--layers", "1", "--heads", "2", "--max-len", "8", "--epochs", "2",
              "--batch-size", "32"]


def write_log(path, n_users=30, n_items=25, length=8, seed=0):
    """A u.data-style log (user item rating timestamp), every rating 5."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        for t, i in enumerate(rng.choice(n_items, length, replace=False)):
            rows.append(f"{u}\t{i}\t5\t{1000 * u + t}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained(tiny, tmp_path_factory):
    from slmrec_cli.config.train import TrainArgs

    run = tmp_path_factory.mktemp("runs") / "sasrec"
    sasrec_run(tiny, run, {"dim": 16, "layers": 1, "heads": 2, "max_len": 8, "dropout": 0.1},
                 TrainArgs(epochs=2, batch_size=32))
    return run


def test_version_and_help(capsys):
    code, out, _ = run_cli(["--version"], capsys)
    assert code == 0 and out.strip().startswith("slmrec ")
    code, out, _ = run_cli(["--help"], capsys)
    assert code == 0
    for stage in ("prepare", "pretrain-ids", "evaluate"):
        assert stage in out


def test_help_does_not_import_torch():
    code = "import sys, slmrec_cli.cli; print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


@pytest.mark.parametrize("args, message", [
    (["--input", "nope.dat", "--format", "movielens"], "nope.dat"),
    (["--input", "{log}", "--format", "movielens", "--min-rating", "5"], "min-rating"),
    (["--input", "{log}", "--format", "movielens", "--num-negatives", "5000"], "num-negatives"),
    (["--input", "{log}", "--format", "movielens", "--k-core", "50"], "k-core"),
    (["--input", "{bad}", "--format", "movielens"], "line 2"),
    (["--input", "{log}"], "--format"),
])
def test_prepare_bad_input_one_line_exit_2(tmp_path, capsys, args, message):
    log = write_log(tmp_path / "u.data")
    bad = tmp_path / "bad.data"
    bad.write_text("1\t2\t5\t100\n1\tx\tfive\t101\n")
    args = [a.format(log=log, bad=bad) for a in args]
    code, out, err = run_cli(["prepare", *args, "--out", tmp_path / "out"], capsys)
    assert code == 2, err
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args, value", [(["--input", "u.data", "--format", "parquet"], "parquet"),
                                         (["--dataset", "ml-20m"], "ml-20m")])
def test_prepare_unknown_choice_is_a_usage_error(tmp_path, capsys, args, value):
    """--format and --dataset take a fixed set of values: anything else is a usage error naming them."""
    code, _, err = run_cli(["prepare", *args, "--out", tmp_path / "out"], capsys)
    assert code == 2 and value in err and "is not one of" in err and "Traceback" not in err, err
    assert len([line for line in err.splitlines() if line.strip()]) <= 3, err  # usage, hint, error
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_to_overwrite_a_foreign_dir(tmp_path, capsys):
    log = write_log(tmp_path / "u.data")
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    code, _, err = run_cli(["prepare", "--input", log, "--format", "movielens", "--out", foreign,
                            "--num-negatives", "10"], capsys)
    assert code == 2 and "not an slmrec dataset" in err
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_prepare_writes_a_dataset_and_force_replaces_it(tmp_path, capsys):
    log = write_log(tmp_path / "u.data")
    out = tmp_path / "ds"
    argv = ["prepare", "--input", log, "--format", "movielens", "--out", out, "--num-negatives", "10"]
    code, stdout, _ = run_cli(argv, capsys)
    assert code == 0 and "users" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["stats"]["users"] == 30 and meta["options"]["num_negatives"] == 10
    assert run_cli(argv, capsys)[0] == 2
    assert run_cli([*argv, "--force"], capsys)[0] == 0


def test_evaluate_contract_and_json(trained, capsys):
    code, out, err = run_cli(["evaluate", trained, "--split", "test", "--protocol", "both", "--json"], capsys)
    assert code == 0, err
    records = json.loads(out)  # one JSON document: the list of records
    assert [r["protocol"] for r in records] == ["sampled", "full"]
    keys = {"dataset", "data_hash", "split", "protocol", "candidates", "mask_history", "users", "run", "version",
            "metrics", "eval_precision"}
    for r in records:
        assert keys <= set(r) and r["eval_precision"] == "fp32"
        assert list(r["metrics"]) == list(METRIC_NAMES)
        assert all(0.0 <= v <= 1.0 for v in r["metrics"].values())
        on_disk = json.loads((trained / "eval" / f"test-{r['protocol']}.json").read_text())
        assert on_disk == r
    assert records[0]["candidates"] == 21 and records[1]["mask_history"] is True


def test_evaluate_side_by_side_with_popularity(trained, tiny, capsys):
    code, out, err = run_cli(["evaluate", trained, "--popularity", "--split", "valid", "--protocol", "sampled"],
                             capsys)
    assert code == 0, err
    assert "popularity" in out and "sasrec" in out


def test_evaluate_bad_input(tmp_path, trained, capsys):
    code, _, err = run_cli(["evaluate", tmp_path], capsys)
    assert code == 2 and "not an slmrec run" in err
    code, _, err = run_cli(["evaluate", trained, "--split", "train"], capsys)
    assert code == 2 and "--split" in err
    code, _, err = run_cli(["evaluate"], capsys)
    assert code == 2
    other = make_dataset(tmp_path, name="other", seed=5)
    code, _, err = run_cli(["evaluate", trained, "--data", other], capsys)
    assert code == 2 and "trained on data" in err


def test_corrupt_weights_are_refused(trained, tmp_path, capsys):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(trained, broken)
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, err = run_cli(["evaluate", broken], capsys)
    assert code == 2 and "model.safetensors" in err and "Traceback" not in err


def test_config_file_sets_defaults_and_cli_overrides(tiny, tmp_path, capsys):
    cfg = tmp_path / "sasrec.yaml"
    cfg.write_text("dim: 16\nlayers: 1\nheads: 2\nmax-len: 8\nepochs: 1\nbatch_size: 32\nlr: 0.01\n")
    out = tmp_path / "run"
    code, _, err = run_cli(["-q", "pretrain-ids", "--config", cfg, "--data", tiny, "--out", out, "--lr", "0.002"],
                           capsys)
    assert code == 0, err
    saved = json.loads((out / "config.json").read_text())
    assert saved["model"]["dim"] == 16 and saved["train"]["epochs"] == 1
    assert saved["train"]["lr"] == 0.002  # the command line wins
    toml = tmp_path / "bad.toml"
    toml.write_text("colour = 'red'\n")
    code, _, err = run_cli(["pretrain-ids", "--config", toml, "--data", tiny, "--out", tmp_path / "r2"], capsys)
    assert code == 2 and "colour" in err
    assert not (tmp_path / "r2").exists()


def test_quiet_and_plain_progress(tiny, tmp_path, capsys):
    code, out, err = run_cli(["pretrain-ids", "--data", tiny, "--out", tmp_path / "r", *TINY_MODEL], capsys)
    assert code == 0
    assert "\x1b[" not in err  # not a terminal: plain lines, no escape codes
    assert "valid MRR" in err
    code, out, err = run_cli(["-q", "pretrain-ids", "--data", tiny, "--out", tmp_path / "r", "--force",
                              *TINY_MODEL], capsys)
    assert code == 0 and err.strip() == "" and "MRR" in out


def test_existing_run_needs_resume_or_force(tiny, trained, capsys):
    code, _, err = run_cli(["pretrain-ids", "--data", tiny, "--out", trained, *TINY_MODEL], capsys)
    assert code == 2 and "--resume" in err


def test_bad_training_options(tiny, tmp_path, capsys):
    for extra, word in ((["--dim", "15", "--heads", "2"], "divisible"), (["--epochs", "0"], "epochs"),
                        (["--lr", "-1"], "lr")):
        code, _, err = run_cli(["pretrain-ids", "--data", tiny, "--out", tmp_path / "x", *extra], capsys)
        assert code == 2 and word in err, err
        assert not (tmp_path / "x").exists()


def test_evaluate_reuse_reads_matching_files(trained, capsys):
    path = trained / "eval" / "valid-sampled.json"
    code, out, _ = run_cli(["evaluate", trained, "--split", "valid", "--protocol", "sampled", "--json"], capsys)
    [fresh] = json.loads(out)
    marked = {**fresh, "metrics": {**fresh["metrics"], "MRR": 0.123456}}
    path.write_text(json.dumps(marked))
    code, out, _ = run_cli(["evaluate", trained, "--split", "valid", "--protocol", "sampled", "--json", "--reuse"],
                           capsys)
    assert code == 0 and json.loads(out)[0]["metrics"]["MRR"] == 0.123456  # read, not recomputed
    code, out, _ = run_cli(["evaluate", trained, "--split", "valid", "--protocol", "sampled", "--json"], capsys)
    assert json.loads(out)[0]["metrics"] == fresh["metrics"]  # without --reuse it scores again


@pytest.mark.parametrize("failure, cause", [
    (OSError("54413 requested and 25584 written"), "no space left on the device"),  # numpy's short write, disk full
    (OSError(errno.ENOSPC, "No space left on device"), "no space left on the device"),
    (PermissionError(errno.EACCES, "Permission denied"), "permission denied"),
    (OSError(errno.EROFS, "Read-only file system"), "read-only file system"),
])
def test_prepare_storage_failure_one_line_nothing_partial(tmp_path, capsys, monkeypatch, failure, cause):
    """A disk that fills up (or refuses writes) while the dataset is written: one line naming the output and the
    cause, exit 2, and neither the dataset nor its temp dir is left behind."""
    def fail(*args, **kwargs):
        raise failure

    monkeypatch.setattr(np.lib.format, "write_array_header_1_0", fail)  # the dataset's arrays are written with it
    log = write_log(tmp_path / "u.data")
    out = tmp_path / "ds"
    code, _, err = run_cli(["prepare", "--input", log, "--format", "movielens", "--out", out, "--num-negatives", "10"],
                           capsys)
    assert code == 2, err
    assert f"cannot write {out}: {cause}" in err and "internal error" not in err, err
    assert len(err.strip().splitlines()) == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["u.data"]
