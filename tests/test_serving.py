"""SASRec's ONNX graph (the baseline's serving path, benchmarks/serving_latency.py): the same scores as torch at any
history length, checked before it is kept; and the serving table's rows for SASRec and an LLM export."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_sasrec_onnx_scores_equal_torch_at_any_length(tiny_runs, tmp_path):
    from slmrec_cli.errors import SlmrecError
    from slmrec_cli.export.onnx import onnx_scorer, session
    from slmrec_cli.export.sasrec import export_sasrec_onnx
    from slmrec_cli.runs import Run

    _, sasrec, teacher = tiny_runs
    histories = torch.tensor([[0, 0, 0, 3, 4, 5, 6, 7], [1, 2, 3, 4, 5, 6, 7, 8], [0, 0, 0, 0, 0, 0, 0, 9]])
    check = export_sasrec_onnx(sasrec, tmp_path / "s.onnx", histories)
    assert check["max_rel_diff"] <= 1e-4
    score = onnx_scorer(session(tmp_path / "s.onnx", threads=1))
    model = Run.load(sasrec).load_model("cpu")
    for items in (histories, histories[:, -3:], torch.tensor([[0, 0, 0, 0, 5, 6, 7, 8, 9, 10, 11, 12]])):
        with torch.no_grad():
            expected = model.score_all(items)
        np.testing.assert_allclose(score(items)[:, 1:].numpy(), expected[:, 1:].numpy(), rtol=1e-4, atol=1e-5)
    with pytest.raises(SlmrecError, match="not a SASRec run"):
        export_sasrec_onnx(teacher, tmp_path / "t.onnx", histories)
    assert not (tmp_path / "t.onnx").exists()


def test_serving_table_sets_each_row_beside_sasrec_onnx(tiny_runs):
    spec = importlib.util.spec_from_file_location("serving_latency", ROOT / "benchmarks" / "serving_latency.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _, sasrec, _ = tiny_runs
    rows = module.sasrec_rows(sasrec, [1, 4], threads=1, min_seconds=0.0)
    assert {(r["variant"], r["batch"]) for r in rows} == {("torch-fp32", 1), ("torch-fp32", 4), ("onnx-fp32", 1),
                                                          ("onnx-fp32", 4)}
    text = module.table(rows)
    assert text.count("| SASRec | onnx-fp32 |") == 2 and "| 1× |" in text
