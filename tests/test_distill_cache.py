"""The teacher feature cache: the same losses as the live teacher, its key, its storage, how distill uses it."""

import json

import numpy as np
import pytest
import torch

from slmrec_cli.distill.blocks import block_layers
from slmrec_cli.distill.cache import FEATURES, OLD_FILE, cache_key, load_or_build, teacher_fingerprint
from slmrec_cli.errors import SlmrecError
from slmrec_cli.runs import Run, RunKind
from slmrec_cli.stages.distill import DistillTask
from tests.helpers import distill_args, distiller, features_of, student_run


@pytest.fixture(scope="module")
def teacher(tiny_runs):
    return tiny_runs


def test_cache_gives_the_same_losses_as_the_live_teacher(teacher, tmp_path):
    model, data, t4 = distiller(teacher)
    model.eval()
    task = DistillTask(model, data, "last", 16, None)
    key = cache_key(teacher_fingerprint(t4), data.content_hash, "last", 8, model.pairs, dtype="fp32")
    cache = load_or_build(tmp_path / "cache", key, task, features_of(model, key), 16, "cpu")
    feats = cache.all()
    assert feats.shape == (task.n_examples, 2, model.student.cfg.hidden)
    idx = np.arange(10)
    live = task.batch(idx)
    task.features = cache
    cached = task.batch(idx)
    with torch.no_grad():
        a = model(live["items"], live["targets"])
        b = model(cached["items"], cached["targets"], cached["teacher_feats"])
    assert a[0].item() == pytest.approx(b[0].item(), rel=1e-5)
    for k in ("ce", "d_cos", "d_norm", "l_ms"):
        assert a[1][k].item() == pytest.approx(b[1][k].item(), rel=1e-5, abs=1e-6)
    # a second call reads the file instead of recomputing
    again = load_or_build(tmp_path / "cache", key, task, features_of(model, key), 16, "cpu").all()
    assert torch.equal(again, feats)
    with pytest.raises(SlmrecError, match="different teacher hash"):
        load_or_build(tmp_path / "cache", {**key, "teacher_hash": "0" * 32}, task, features_of(model, key), 16, "cpu")


def test_a_cache_with_more_teacher_layers_serves_fewer_blocks(teacher, tmp_path):
    model, data, t4 = distiller(teacher)  # B = 2: teacher layers 2 and 4
    model.eval()
    task = DistillTask(model, data, "last", 16, None)
    t_hash = teacher_fingerprint(t4)

    def key(pairs):
        return cache_key(t_hash, data.content_hash, "last", 8, pairs, dtype="fp32")

    feats = load_or_build(tmp_path / "cache", key(model.pairs), task, features_of(model), 16, "cpu").all()
    b1, _, _ = distiller(teacher)
    b1.pairs = block_layers(4, 2, 1)  # B = 1: teacher layer 4 only
    one = load_or_build(tmp_path / "cache", key(b1.pairs), task, features_of(b1), 16, "cpu").all()
    assert torch.equal(one, feats[:, 1:])
    live, _ = b1.teacher_features(task.batch(np.arange(4))["items"])
    assert torch.allclose(one[:4], live.float().transpose(0, 1), atol=1e-5)
    load_or_build(tmp_path / "c1", key(b1.pairs), task, features_of(b1), 16, "cpu")
    with pytest.raises(SlmrecError, match="holds teacher layers 4, not 2"):  # but not the other way round
        load_or_build(tmp_path / "c1", key(model.pairs), task, features_of(model), 16, "cpu")


def test_a_cached_run_trains_like_a_live_one_without_the_teacher_in_memory(teacher, tmp_path, monkeypatch):
    import slmrec_cli.train.lifecycle as lifecycle
    from slmrec_cli.train.engine import fit

    _, _, t4 = teacher
    seen, loads = [], []

    def spy(task, *a, **k):
        seen.append(task.model.teacher)
        return fit(task, *a, **k)

    real = Run.load_model

    def load_spy(run, *a, **k):
        if run.kind is RunKind.TEACHER:
            loads.append(run.path)
        return real(run, *a, **k)

    monkeypatch.setattr(lifecycle, "fit", spy)
    monkeypatch.setattr(Run, "load_model", load_spy)
    logs = {}
    runs = (("live", None, "fp32"), ("cached", tmp_path / "c32", "fp32"), ("again", tmp_path / "c32", "fp32"),
            ("bf16", tmp_path / "c16", "bf16"))
    for name, cache, dtype in runs:
        loads.clear()
        student_run(t4, tmp_path / name, 2, distill_args(epochs=1), blocks=2, teacher_cache=cache,
                    teacher_cache_dtype=dtype)
        records = [json.loads(x) for x in (tmp_path / name / "train_log.jsonl").read_text().splitlines()]
        logs[name] = [r for r in records if r["event"] == "train"]
        # the teacher's decoder is loaded to train live or to build a cache, never to read a built one
        assert loads == ([] if name == "again" else [t4]), name
    assert seen[0] is not None and seen[1] is None and seen[2] is None  # cached runs train without the teacher
    assert len(logs["live"]) == len(logs["cached"]) > 1
    for other, rel in (("cached", 1e-4), ("again", 1e-4), ("bf16", 5e-2)):  # bf16: rounding of the stored features
        for a, b in zip(logs["live"], logs[other], strict=True):
            for k in ("loss", "ce", "d_cos", "d_norm", "l_ms"):
                assert a[k] == pytest.approx(b[k], rel=rel, abs=1e-6), (other, a["step"], k)
    assert (tmp_path / "c16" / FEATURES).stat().st_size < 0.6 * (tmp_path / "c32" / FEATURES).stat().st_size
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["distill"]["teacher_cache_dtype"] == "bf16"


def live_and_cached(model, task, cache, idx):
    """(loss, terms) of the batch idx with the live teacher, then read from `cache`; every term must agree."""
    live = task.batch(idx)
    task.features = cache
    cached = task.batch(idx)
    task.features = None
    with torch.no_grad():
        a = model(live["items"], live["targets"])
        b = model(cached["items"], cached["targets"], cached["teacher_feats"])
    for k in ("ce", "d_cos", "d_norm", "l_ms", "l_kd"):
        assert a[1][k].item() == pytest.approx(b[1][k].item(), rel=1e-5, abs=1e-6), k
    return a, b


@pytest.mark.parametrize("align", ["last", "all"])
def test_cache_equals_live_under_causal_targets(teacher, tmp_path, align):
    model, data, t4 = distiller(teacher, lambda_kd=1.0, align=align)
    model.eval()
    task = DistillTask(model, data, "causal", 16, None)
    positions = model.cached_positions(causal=True)
    key = cache_key(teacher_fingerprint(t4), data.content_hash, "causal", 8, model.pairs, positions, dtype="fp32")
    cache = load_or_build(tmp_path / "cache", key, task, features_of(model, key), 16, "cpu")
    feats = cache.all()
    hidden = model.student.cfg.hidden
    assert feats.shape == ((task.n_examples, 2, 8, hidden) if align == "all" else (task.n_examples, 2, hidden))
    idx = np.arange(10)
    live = task.batch(idx)
    assert live["targets"].shape == live["items"].shape  # one target per slot
    a, b = live_and_cached(model, task, cache, idx)
    assert a[0].item() == pytest.approx(b[0].item(), rel=1e-5)
    other = "last" if align == "all" else "history"  # a cache of the other alignment is refused, never misread
    with pytest.raises(SlmrecError, match="different positions"):
        load_or_build(tmp_path / "cache", {**key, "positions": other}, task, features_of(model, key), 16, "cpu")
    with pytest.raises(SlmrecError, match="different targets"):
        load_or_build(tmp_path / "cache", {**key, "targets": "last"}, task, features_of(model, key), 16, "cpu")


def test_a_cache_is_keyed_by_dtype_autocast_and_version_and_old_ones_are_refused(teacher, tmp_path):
    model, data, t4 = distiller(teacher)
    task = DistillTask(model, data, "last", 16, None)
    key = cache_key(teacher_fingerprint(t4), data.content_hash, "last", 8, model.pairs, dtype="fp32")
    load_or_build(tmp_path / "cache", key, task, features_of(model), 16, "cpu")
    for field, value, what in (("dtype", "bf16", "storage dtype"), ("autocast", "bf16", "autocast"),
                               ("version", "0.0.1", "slmrec version")):
        with pytest.raises(SlmrecError, match=f"different {what}"):
            load_or_build(tmp_path / "cache", {**key, field: value}, task, features_of(model), 16, "cpu")
    old = tmp_path / "old"
    old.mkdir()
    (old / OLD_FILE).write_bytes(b"x")
    with pytest.raises(SlmrecError, match="older slmrec"):
        load_or_build(old, key, task, features_of(model), 16, "cpu")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(SlmrecError, match="non-empty directory"):
        load_or_build(tmp_path / "busy", key, task, features_of(model), 16, "cpu")
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"


def test_the_cache_is_built_under_the_live_teachers_autocast(teacher, tmp_path):
    model, data, t4 = distiller(teacher)
    task = DistillTask(model, data, "last", 16, None)
    key = cache_key(teacher_fingerprint(t4), data.content_hash, "last", 8, model.pairs, dtype="fp32",
                    autocast="bf16")
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    cache = load_or_build(tmp_path / "cache", key, task, features_of(model), 16, "cpu", autocast=bf16)
    items = task.batch(np.arange(16))["items"]
    with bf16():
        live = model.teacher_features(items)[0].float().transpose(0, 1)
    plain = model.teacher_features(items)[0].float().transpose(0, 1)
    assert torch.equal(cache.rows(np.arange(16)), live) and not torch.equal(live, plain)
    # rows are read per batch, in the order asked, from the memory map
    assert torch.equal(cache.rows(np.array([5, 2])), live[[5, 2]])


def test_a_cache_built_from_cut_batches_serves_cut_batches(teacher, tmp_path):
    """Every-slot features of short windows: built from batches cut to their longest window (here one window a batch),
    stored at max_len slots, read back into a training batch cut to another width: the same terms as live."""
    model, data, t4 = distiller(teacher, lambda_kd=1.0, align="all")
    model.eval()
    task = DistillTask(model, data, "causal", 16, None)
    key = cache_key(teacher_fingerprint(t4), data.content_hash, "causal", 8, model.pairs, "history", dtype="fp32")
    cache = load_or_build(tmp_path / "cache", key, task, features_of(model, key), 1, "cpu")
    short = np.flatnonzero(task.lengths < task.lengths.max())[:6]
    live = task.batch(short)
    assert live["items"].shape[1] < 8  # the batch is cut, narrower than the cache's slots
    live_and_cached(model, task, cache, short)
