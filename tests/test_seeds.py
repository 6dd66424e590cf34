"""benchmarks/seeds.py: two settings paired by seed, from the runs' own files."""

import importlib.util
import json
from pathlib import Path

import pytest

from tests.helpers import fake_run_config

SPEC = importlib.util.spec_from_file_location("seeds", Path(__file__).parents[1] / "benchmarks" / "seeds.py")
seeds = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(seeds)


def fake_run(path: Path, layers: int, seed: int, mrr: float) -> Path:
    (path / "eval").mkdir(parents=True)
    cfg = fake_run_config("teacher", seed, model={"layers": layers}, base_model={"layers_total": 8})
    (path / "config.json").write_text(json.dumps(cfg))
    (path / "eval" / "test-sampled.json").write_text(json.dumps({"metrics": {"MRR": mrr}}))
    return path


def test_pairs_by_seed_and_summarises(tmp_path, capsys):
    a = [fake_run(tmp_path / f"a{s}", 4, s, m) for s, m in ((1, 0.06), (2, 0.08), (3, 0.07))]
    b = [fake_run(tmp_path / f"b{s}", 2, s, m) for s, m in ((3, 0.05), (1, 0.07), (2, 0.06))]  # any order
    seeds.main(["--a", *map(str, a), "--b", *map(str, b)])
    out = capsys.readouterr().out
    assert "| 1 | 6.00 | 7.00 | -1.00 |" in out and "| 2 | 8.00 | 6.00 | +2.00 |" in out
    # A 7 ± 1, B 6 ± 1, differences (-1, +2, +2): mean 1, sample sd sqrt(3)
    assert "| mean ± sd | 7.00 ± 1.00 | 6.00 ± 1.00 | 1.00 ± 1.73 |" in out
    assert "A ahead in 2 of 3 seeds" in out
    assert "A: E4SRec-4" in out and "B: E4SRec-2" in out


def test_unpaired_seeds_are_refused(tmp_path):
    a = [fake_run(tmp_path / "a1", 4, 1, 0.06)]
    b = [fake_run(tmp_path / "b2", 2, 2, 0.05)]
    with pytest.raises(SystemExit, match="different seeds"):
        seeds.main(["--a", str(a[0]), "--b", str(b[0])])


def test_missing_evaluation_is_named(tmp_path):
    a = fake_run(tmp_path / "a1", 4, 1, 0.06)
    (a / "eval" / "test-sampled.json").unlink()
    b = fake_run(tmp_path / "b1", 2, 1, 0.05)
    with pytest.raises(SystemExit, match="no test-sampled evaluation"):
        seeds.main(["--a", str(a), "--b", str(b)])
