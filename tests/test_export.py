import json

import numpy as np
import torch

from slmrec_cli.export.model import load_export, merge_run
from slmrec_cli.runs import Run
from tests.helpers import histories, run_cli


def test_merged_equals_unmerged(exported):
    _, run, _, _ = exported
    model = Run.load(run).load_model()
    rec = merge_run(Run.load(run))
    x = histories(model.cfg.n_items)
    with torch.no_grad():
        assert (rec.score_all(x) - model.score_all(x)).abs().max().item() <= 1e-5


def test_export_reload_equals_run(exported):
    _, run, out, _ = exported
    model = Run.load(run).load_model()
    rec, cfg = load_export(out)
    x = histories(cfg["n_items"], batch=3, length=11)
    cands = torch.randint(1, cfg["n_items"] + 1, (3, 6))
    with torch.no_grad():
        assert (rec.score_all(x) - model.score_all(x)).abs().max().item() <= 1e-5
        assert torch.allclose(rec.score(x, cands), model.score_all(x).gather(1, cands), atol=1e-5)


def test_onnx_matches_torch_and_int8_keeps_the_top10(exported):
    from slmrec_cli.export.onnx import onnx_scorer, session

    _, _, out, result = exported
    assert result["quality"]["onnx_max_abs_diff"] <= 1e-4  # measured on shapes not seen at export
    rec, cfg = load_export(out)
    fp32 = onnx_scorer(session(out / "model.onnx", threads=1))
    int8 = onnx_scorer(session(out / "model.int8.onnx", threads=1))
    x = histories(cfg["n_items"], batch=16, length=9, seed=3)
    with torch.no_grad():
        ref = rec.score_all(x)
    assert (fp32(x) - ref).abs().max().item() <= 1e-4
    assert top10_overlap(fp32(x), int8(x)) >= 0.9


def top10_overlap(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a[:, 1:].topk(10).indices, b[:, 1:].topk(10).indices
    return float(np.mean([len(set(a[i].tolist()) & set(b[i].tolist())) / 10 for i in range(len(a))]))


def test_int8_schemes(exported, tmp_path):
    """smooth (default): every MatMul but the head in int8; dynamic: the outlier layers stay fp32; block: MatMulNBits.
    Each keeps the top-10 of fp32."""
    import onnx

    from slmrec_cli.export.onnx import onnx_scorer, session
    from slmrec_cli.export.onnx_quant import quantize_int8

    _, _, out, result = exported
    quality = result["quality"]
    assert quality["onnx_int8_scheme"] == "smooth" and quality["calibration_users"] > 0
    tried = {t["alpha"]: t for t in quality["smooth_alphas_tried"]}  # α chosen on training histories, not test
    assert len(tried) == 3 and quality["smooth_alpha"] in tried
    assert tried[quality["smooth_alpha"]]["top10_overlap"] == max(t["top10_overlap"] for t in tried.values())
    assert "/MatMul" in quality["onnx_int8_fp32_nodes"]  # the item scoring stays fp32
    assert not any("down_proj" in n for n in quality["onnx_int8_fp32_nodes"])
    dyn = quantize_int8(out / "model.onnx", tmp_path / "dyn.onnx", "dynamic")
    assert any("down_proj" in n for n in dyn["onnx_int8_fp32_nodes"])
    quantize_int8(out / "model.onnx", tmp_path / "block.onnx", "block")
    ops = {f: {n.op_type for n in onnx.load(str(f)).graph.node}
           for f in (out / "model.int8.onnx", tmp_path / "dyn.onnx", tmp_path / "block.onnx")}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops[out / "model.int8.onnx"]
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops[tmp_path / "dyn.onnx"]
    assert "MatMulNBits" in ops[tmp_path / "block.onnx"] and "MatMulInteger" not in ops[tmp_path / "block.onnx"]
    x = histories(load_export(out)[1]["n_items"], batch=16, length=9, seed=4)
    fp32 = onnx_scorer(session(out / "model.onnx", threads=1))(x)
    for f in ops:
        assert top10_overlap(fp32, onnx_scorer(session(f, threads=1))(x)) >= 0.9, f.name


def test_smoothquant_keeps_the_function(exported):
    from slmrec_cli.data import load_dataset
    from slmrec_cli.export.smooth import activation_maxima, calibration_histories, smoothed_copy

    data, _, out, _ = exported
    rec, cfg = load_export(out)
    ds = load_dataset(data)
    calib = calibration_histories(ds, cfg["max_len"], users=20)
    assert calib.shape == (20, cfg["max_len"])
    maxima = activation_maxima(rec, calib)
    assert set(maxima) == {f"{i}.{k}" for i in range(len(rec.decoder.layers)) for k in ("attn", "mlp", "down")}
    smoothed = smoothed_copy(rec, maxima, alpha=0.8)
    x = histories(cfg["n_items"], batch=6, length=9, seed=5)
    with torch.no_grad():
        a, b = rec.score_all(x), smoothed.score_all(x)
        assert (a - b).abs().max().item() <= 1e-4 * max(1.0, a.abs().max().item())
        for name in ("mlp.down_proj", "mlp.up_proj", "self_attn.q_proj"):  # the copy changed, not rec
            w0 = rec.decoder.layers[0].get_submodule(name).weight
            assert not torch.equal(w0, smoothed.decoder.layers[0].get_submodule(name).weight), name


def test_quality_and_bench_files(exported):
    _, _, out, _ = exported
    quality = json.loads((out / "quality.json").read_text())
    names = [v["name"] for v in quality["variants"]]
    assert names[:4] == ["torch-fp32", "onnx-fp32", "onnx-int8", "onnx-int4"]
    for v in quality["variants"]:
        assert set(v["metrics"]) == {"sampled", "full"} and v["bytes"] > 0 and (out / v["file"]).exists()
        assert v["relative_mrr"] > 0
        lo, hi = v["relative_mrr_ci95"]
        assert lo <= v["relative_mrr"] <= hi
    assert quality["variants"][0]["relative_mrr"] == 1.0 and quality["variants"][0]["relative_mrr_ci95"] == [1.0, 1.0]
    assert quality["onnx_int8_scheme"] == "smooth"
    bench = json.loads((out / "bench.json").read_text())
    assert bench["threads"] == 1 and bench["results"]
    for r in bench["results"]:
        assert {"variant", "runtime", "provider", "batch", "p50_ms", "p95_ms", "users_per_s"} <= set(r)
        assert r["runtime"] in ("torch", "ort") and r["batch"] in (1, 4)


def test_recommend_returns_raw_ids_and_never_the_history(exported, capsys, tmp_path):
    data, _, out, _ = exported
    raw = [line.split("\t")[1] for line in (out / "item_map.tsv").read_text().splitlines()[1:]]
    history = raw[:3]
    code, stdout, err = run_cli(["recommend", "--export", out, "--history", ",".join(history), "--k", "10",
                                 "--json"], capsys)
    assert code == 0, err
    rec = json.loads(stdout)
    assert len(rec["items"]) == 10 and not set(rec["items"]) & set(history)
    assert set(rec["items"]) <= set(raw)
    lines = tmp_path / "h.txt"
    lines.write_text(f"{raw[0]},{raw[1]}\n{raw[5]}\n")
    code, stdout, _ = run_cli(["recommend", "--export", out, "--input", lines, "--k", "3", "--json"], capsys)
    assert code == 0 and [len(r["items"]) for r in json.loads(stdout)] == [3, 3]  # one document: the list
    code, stdout, _ = run_cli(["recommend", "--export", out, "--input", lines, "--k", "3", "--jsonl"], capsys)
    assert code == 0 and [json.loads(line)["history"] for line in stdout.splitlines()] == [raw[:2], raw[5:6]]


def test_bad_input(exported, capsys, tmp_path):
    _, run, out, _ = exported
    cases = [
        (["recommend", "--export", out, "--history", "nope-1,nope-2"], "nope-1"),
        (["recommend", "--export", out, "--history", " , "], "empty"),
        (["recommend", "--export", tmp_path, "--history", "1"], "not an slmrec export"),
        (["export", "--run", tmp_path, "--out", tmp_path / "e"], "not an slmrec run"),
        (["export", "--run", run, "--out", tmp_path / "e", "--quantize", "int3"], "int3"),
        (["export", "--run", run, "--out", tmp_path / "e", "--format", "tflite"], "tflite"),
        (["export", "--run", run, "--out", out], "already exists"),
        (["export", "--bench-only", tmp_path], "not an slmrec export"),
    ]
    for argv, word in cases:
        code, _, err = run_cli(argv, capsys)
        assert code == 2 and word in err and "Traceback" not in err, (argv, err)
    assert not (tmp_path / "e").exists()


def test_bench_only_rewrites_bench(exported, capsys):
    _, _, out, _ = exported
    code, stdout, err = run_cli(["export", "--bench-only", out, "--batch-sizes", "2", "--threads", "1"], capsys)
    assert code == 0, err
    assert {r["batch"] for r in json.loads((out / "bench.json").read_text())["results"]} == {2}


def test_bad_int8_options_are_one_line_errors(exported, tmp_path, capsys):
    _, run, _, _ = exported
    bad = ((["--int8-scheme", "fp8"], "'fp8' is not one of"), (["--smooth-alpha", "1.5"], "--smooth-alpha"))
    for args, words in bad:
        code, _, err = run_cli(["export", "--run", run, "--out", tmp_path / "x", "--quantize", "int8", *args], capsys)
        assert code == 2 and words in err and "Traceback" not in err
        assert not (tmp_path / "x").exists()


def test_int8_error_benchmark_and_its_per_token_pass(exported, tmp_path, capsys):
    """benchmarks/int8_error.py: the per-token int8 graph computes what fp32 does, and every variant gets a row."""
    import importlib.util
    from pathlib import Path

    import onnx

    from slmrec_cli.export.onnx import onnx_scorer, session
    from slmrec_cli.export.onnx_quant import int8_excluded_nodes

    spec = importlib.util.spec_from_file_location("int8_error", Path(__file__).parents[1] / "benchmarks" /
                                                  "int8_error.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    _, _, out, _ = exported
    x = histories(load_export(out)[1]["n_items"], batch=16, length=9, seed=4)
    fp32 = onnx_scorer(session(out / "model.onnx", threads=1))(x)
    for acts in ("u8", "s8"):
        dst = tmp_path / f"{acts}.onnx"
        bench.per_token_int8(out / "model.onnx", dst, int8_excluded_nodes(out / "model.onnx", outliers=False), acts)
        ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
        assert "MatMulInteger" in ops and "DynamicQuantizeLinear" not in ops
        got = onnx_scorer(session(dst, threads=1))(x)
        assert top10_overlap(fp32, got) >= 0.9, acts
        assert float((got - fp32).norm() / fp32.norm()) < 0.25, acts  # a wrong scale or layout gives ~1
    bench.main([str(out), "--users", "8", "--work", str(tmp_path / "work")])
    table = capsys.readouterr().out
    assert table.count("| per-") == 5


def test_recommend_serves_the_variant_asked_for_or_the_best_one_that_holds(exported, capsys, tmp_path):
    """Default: onnx-int8 when quality.json puts its relative MRR at >= 0.99 (or >= 0.97 with a paired interval
    reaching 0.99), else onnx-fp32; --variant picks any variant the export has, and every variant recommends the
    same kind of thing (raw ids, history excluded)."""
    import shutil

    from slmrec_cli.stages.recommend import choose_variant

    _, _, out, result = exported
    int8 = next(v for v in result["quality"]["variants"] if v["name"] == "onnx-int8")
    holds = int8["relative_mrr"] >= 0.99 or (int8["relative_mrr"] >= 0.97 and int8["relative_mrr_ci95"][1] >= 0.99)
    expected = "onnx-int8" if holds else "onnx-fp32"
    assert choose_variant(out, None)[0] == expected
    worse = tmp_path / "worse"
    shutil.copytree(out, worse)
    quality = json.loads((worse / "quality.json").read_text())
    int8 = next(v for v in quality["variants"] if v["name"] == "onnx-int8")
    for rel, ci, serves in ((0.95, [0.93, 1.0], False),  # below the floor, whatever the interval
                            (0.984, [0.955, 1.012], True),  # ml-100k's noise: no loss beyond 1 % shown
                            (0.975, [0.962, 0.987], False),  # a loss beyond 1 % shown
                            (0.991, [0.97, 1.01], True)):
        int8["relative_mrr"], int8["relative_mrr_ci95"] = rel, ci
        (worse / "quality.json").write_text(json.dumps(quality))
        variant, why = choose_variant(worse, None)
        assert variant == ("onnx-int8" if serves else "onnx-fp32"), (rel, ci, why)
        assert f"{rel:.3f}" in why
    del int8["relative_mrr_ci95"]
    int8["relative_mrr"] = 0.985
    (worse / "quality.json").write_text(json.dumps(quality))
    assert choose_variant(worse, None)[0] == "onnx-fp32"  # no interval: the point estimate decides
    raw = [line.split("\t")[1] for line in (out / "item_map.tsv").read_text().splitlines()[1:]]
    for variant in ("onnx-int4", "torch-fp32"):
        code, stdout, err = run_cli(["recommend", "--export", out, "--history", ",".join(raw[:3]), "--k", "5",
                                     "--json", "--variant", variant], capsys)
        assert code == 0 and f"serving {variant}" in err, err
        assert len(json.loads(stdout)["items"]) == 5
    (worse / "model.int4.onnx").unlink()  # exported, then lost: named
    code, _, err = run_cli(["recommend", "--export", worse, "--history", raw[0], "--variant", "onnx-int4"], capsys)
    assert code == 2 and "model.int4.onnx is missing" in err
    sums = json.loads((worse / "checksums.json").read_text())
    del sums["sha256"]["model.int4.onnx"]  # never exported
    (worse / "checksums.json").write_text(json.dumps(sums))
    code, _, err = run_cli(["recommend", "--export", worse, "--history", raw[0], "--variant", "onnx-int4"], capsys)
    assert code == 2 and "has no onnx-int4 variant" in err
    code, _, err = run_cli(["recommend", "--export", out, "--history", raw[0], "--variant", "fp8"], capsys)
    assert code == 2 and "fp8" in err
