"""Tiny synthetic datasets with learnable structure, for fast end-to-end tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from slmrec_cli.data import Log, prepare, save_dataset


def synthetic_log(n_users: int = 60, n_items: int = 40, length: int = 12, seed: int = 0) -> Log:
    """Users walk a ring of items (item i is usually followed by i+1): a sequential model can learn it,
    popularity cannot."""
    rng = np.random.default_rng(seed)
    users, items, times = [], [], []
    for u in range(n_users):
        start = int(rng.integers(n_items))
        for t in range(length):
            step = 1 if rng.random() < 0.9 else int(rng.integers(2, 5))
            start = (start + step) % n_items
            users.append(f"u{u}")
            items.append(f"i{start}")
            times.append(float(1000 * u + t))
    return Log(users=users, items=items, ratings=None, timestamps=np.asarray(times))


def make_dataset(root: Path, name: str = "tiny", num_negatives: int = 20, **kw) -> Path:
    out = Path(root) / name
    opts = {"min_rating": None, "k_core": 2, "keep_duplicates": False, "num_negatives": num_negatives, "seed": 1}
    save_dataset(prepare(synthetic_log(**kw), **opts), out, name=name, source={"kind": "synthetic"},
                 options=opts, force=False)
    return out


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    """Run `slmrec ARGS` in-process through the real entry point; return (exit code, stdout, stderr)."""
    import sys

    from slmrec_cli.cli import main

    argv = sys.argv
    sys.argv = ["slmrec", *[str(a) for a in args]]
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv = argv
        from slmrec_cli import ui

        ui.set_mode()
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SASREC_TINY = {"dim": 16, "layers": 1, "heads": 2, "max_len": 8, "dropout": 0.1}
TEACHER_TINY = {"layers": 4, "max_len": 8, "lora_r": 4, "lora_alpha": 8}


def sasrec_run(data: Path, out: Path, model: dict, args, *, resume: bool = False, force: bool = False,
               on_step=None) -> dict:
    """`pretrain-ids` from Python: the model options as a dict, the training as a TrainArgs."""
    from slmrec_cli.config.models import SASRecConfig
    from slmrec_cli.config.stages import PretrainConfig
    from slmrec_cli.config.train import RunOptions
    from slmrec_cli.stages.pretrain_ids import pretrain_ids

    cfg = PretrainConfig(data=data, run=RunOptions(out, resume, force), model=SASRecConfig(**model), train=args)
    return pretrain_ids(cfg, on_step=on_step)


def teacher_run(data: Path, ids: Path, base: str, out: Path, model: dict, args, *, resume: bool = False,
                force: bool = False, on_step=None, eval_batch: int = 32, gradient_checkpointing: bool = False,
                **options) -> dict:
    """`train-teacher` from Python (options: targets, load_in_8bit, load_in_4bit)."""
    from slmrec_cli.config.models import LLMRecConfig, prompt_template
    from slmrec_cli.config.stages import TeacherConfig
    from slmrec_cli.config.train import LLMRunOptions, RunOptions
    from slmrec_cli.stages.train_teacher import train_teacher

    model = {**model, "prompt": prompt_template(model.get("prompt"))}
    cfg = TeacherConfig(data=data, ids=ids, run=RunOptions(out, resume, force), base_model=base,
                        model=LLMRecConfig(**model), train=args,
                        llm=LLMRunOptions(eval_batch, gradient_checkpointing), **options)
    return train_teacher(cfg, on_step=on_step)


def student_run(teacher: Path, out: Path, student_layers: int, args, *, resume: bool = False, force: bool = False,
                on_step=None, data: Path | None = None, targets: str | None = None, teacher_cache: Path | None = None,
                eval_batch: int = 32, gradient_checkpointing: bool = False, teacher_cache_dtype: str = "bf16",
                **options) -> dict:
    """`distill` from Python (options: the DistillOptions fields)."""
    from slmrec_cli.config.distill import DistillOptions
    from slmrec_cli.config.stages import DistillConfig
    from slmrec_cli.config.train import LLMRunOptions, RunOptions
    from slmrec_cli.stages.distill import distill

    cfg = DistillConfig(teacher=teacher, run=RunOptions(out, resume, force),
                        distill=DistillOptions(student_layers=student_layers, **options), teacher_cache=teacher_cache,
                        teacher_cache_dtype=teacher_cache_dtype, data=data, targets=targets, train=args,
                        llm=LLMRunOptions(eval_batch, gradient_checkpointing))
    return distill(cfg, on_step=on_step)


def distill_args(**kw):
    """The distill tests' training: two epochs of batch 16 at lr 5e-3, logged every step (kw override)."""
    from slmrec_cli.config.train import TrainArgs

    return TrainArgs(**{"epochs": 2, "batch_size": 16, "lr": 5e-3, "log_every": 1, **kw})


def distiller(runs: tuple[Path, Path, Path], **kw):
    """(a 2←4 Distiller with B = 2 over the shared tiny teacher, its dataset, the teacher run); kw: DistillOptions."""
    from dataclasses import replace

    import torch

    from slmrec_cli.config.distill import DistillOptions
    from slmrec_cli.data import load_dataset
    from slmrec_cli.distill.blocks import block_layers
    from slmrec_cli.distill.model import Distiller
    from slmrec_cli.models.build import build_model
    from slmrec_cli.runs import Run

    data_dir, _, t4 = runs
    teacher = Run.load(t4)
    t = teacher.load_model()
    scfg = replace(teacher.llm_model, layers=2)
    torch.manual_seed(0)
    s, _ = build_model(scfg, "tiny-random", t.id_table)
    opts = DistillOptions(**{"student_layers": 2, "blocks": 2, "norm_loss": "squared", **kw})
    return Distiller(s, t, block_layers(4, 2, 2), opts), load_dataset(data_dir), t4


def features_of(model, key=None):
    """What distill builds a cache from: the teacher's block states at the key's positions."""
    positions = (key or {}).get("positions", "last")
    return lambda items: model.teacher_features(items, positions)[0]


def histories(n_items, batch=5, length=8, seed=1):
    """Random left-padded histories [batch, length] of item ids 1..n_items, each with its own amount of padding."""
    import torch

    rng = np.random.default_rng(seed)
    items = rng.integers(1, n_items + 1, size=(batch, length))
    for row in range(batch):
        items[row, : rng.integers(0, length - 1)] = 0
    return torch.from_numpy(items)


def copy_runs(runs: tuple[Path, Path, Path], root: Path) -> tuple[Path, Path, Path]:
    """A private copy of the shared (data, SASRec, teacher) under root, for a test that writes into them. The runs
    keep pointing at the shared dataset, which no test writes."""
    import shutil

    data, sasrec, teacher = runs
    for run in (sasrec, teacher):
        shutil.copytree(run, Path(root) / run.name)
    return data, Path(root) / sasrec.name, Path(root) / teacher.name


def tiny_teacher(root: Path, epochs: int = 2):
    """(data dir, sasrec run, tiny-random 4-layer teacher run) under root."""
    from slmrec_cli.config.train import TrainArgs

    data = make_dataset(root)
    sasrec_run(data, root / "sasrec", SASREC_TINY, TrainArgs(epochs=3, batch_size=32, lr=5e-3))
    teacher_run(data, root / "sasrec", "tiny-random", root / "t4", TEACHER_TINY,
                TrainArgs(epochs=epochs, batch_size=16, lr=5e-3, log_every=1))
    return data, root / "sasrec", root / "t4"


# --- the CLI in a subprocess, one thread, no GPU, optionally under torchrun (gloo) ---------------------------------

REPO = Path(__file__).resolve().parents[1]


def cli_env() -> dict[str, str]:
    import os

    path = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "",
            "PYTHONPATH": path}


def cli_command(args: list, nproc: int = 1) -> list[str]:
    """`slmrec ARGS` as a command line; nproc > 1 runs it under torchrun on a free port (--standalone)."""
    import sys

    launcher = [sys.executable]
    if nproc > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc)]
    return [*launcher, "-m", "slmrec_cli.cli", *[str(a) for a in args]]


def run_subprocess(args: list, nproc: int = 1, timeout: float = 600):
    """Run `slmrec ARGS` to completion in a subprocess; return the CompletedProcess (text stdout/stderr)."""
    import subprocess

    return subprocess.run(cli_command(args, nproc), env=cli_env(), capture_output=True, text=True, timeout=timeout)


def wait_for_file(path: Path, proc, timeout: float = 600, poll: float = 0.02) -> bool:
    """Poll until `path` exists (True) or `proc` has exited (False); no timing is asserted, timeout only guards."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if Path(path).exists():
            return True
        if proc.poll() is not None:
            return Path(path).exists()
        time.sleep(poll)
    raise TimeoutError(f"{path} did not appear within {timeout} s")


def eval_records(run: Path) -> dict[str, dict]:
    """Every metrics file of a run, without the run path (which differs between two runs of the same recipe)."""
    import json

    return {f.name: {k: v for k, v in json.loads(f.read_text()).items() if k != "run"}
            for f in sorted((Path(run) / "eval").glob("*.json"))}


def fake_run_config(kind: str, seed: int = 42, **sections) -> dict:
    """A complete config.json of a run of `kind` (sasrec, teacher, student) that was never trained, for tests of
    what reads runs (the report); `sections` update its sections (a dict updates that section's keys)."""
    data = {"name": "tiny", "path": "/nowhere", "hash": "h"}
    if kind == "sasrec":
        cfg = {"model": {"n_items": 40, "dim": 64}}
    else:
        cfg = {"model": {"n_items": 40, "id_dim": 16, "hidden": 64, "layers": 2},
               "base_model": {"ref": "tiny-random", "kind": "tiny-random", "path": None, "hash": "b",
                              "pretrained": False, "layers_total": 4, "hidden_size": 64}}
    if kind == "student":
        cfg["distill"] = {"teacher": "/nowhere/t4", "teacher_hash": "t", "teacher_layers": 4,
                          "pairs": [[2, 1], [4, 2]], "student_layers": 2, "blocks": 2}
    cfg = {"format": "slmrec-run", "format_version": 1, "kind": kind, "data": data, "train": {"seed": seed}, **cfg}
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


def fake_result(path: Path, kind: str, seed: int = 42, **sections):
    """A report Result of a fake run (fake_run_config) in `path` (not created)."""
    from slmrec_cli.report.collect import Result
    from slmrec_cli.runs import Run

    return Result(Run.from_config(Path(path), fake_run_config(kind, seed, **sections)))
