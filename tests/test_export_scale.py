"""Export at scale (issue #18 item 6): ONNX external data past protobuf's 2 GiB (the threshold set low here), the fp16
variant for ONNX Runtime's CUDA provider, the relative ONNX-vs-torch tolerance, merging on the run's device, and the
benchmark's IOBinding and node-placement code on the CPU (the CUDA runs themselves need a GPU)."""

import json
import shutil

import numpy as np
import pytest
import torch

from slmrec_cli.errors import SlmrecError
from tests.helpers import histories, run_cli

ONNX = {"onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx", "onnx-int4": "model.int4.onnx",
        "onnx-fp16": "model.fp16.onnx"}


@pytest.fixture(scope="module")
def external(exported, tmp_path_factory):
    """The shared export's run exported again with every tensor over 1 KiB in external data (threshold 0)."""
    import slmrec_cli.export.onnx as onnx_mod
    from slmrec_cli.config.export import ExportConfig
    from slmrec_cli.stages.export import export

    _, run, _, _ = exported
    out = tmp_path_factory.mktemp("external") / "exp"
    mp = pytest.MonkeyPatch()
    mp.setattr(onnx_mod, "EXTERNAL_DATA_ABOVE", 0)
    try:
        result = export(run, out, ExportConfig(format=["onnx"], quantize=["int8", "int4", "fp16"], threads=1))
    finally:
        mp.undo()
    return out, result


def test_save_onnx_decides_by_the_size_of_the_tensors(tmp_path, monkeypatch):
    """One file under the threshold, .onnx + .data over it; a later single-file save removes the stale data file;
    moving keeps the pair together (rewritten under another name, since the .onnx names its data file)."""
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    import slmrec_cli.export.onnx as onnx_mod

    w = np.arange(64 * 32, dtype=np.float32).reshape(64, 32) / 1000

    def model():
        graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 64])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 32])],
                                  [numpy_helper.from_array(w, "w")])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])

    assert onnx_mod.initializer_bytes(model()) == w.nbytes
    path = tmp_path / "m.onnx"
    assert onnx_mod.save_onnx(model(), path) is False and not (tmp_path / "m.onnx.data").exists()
    monkeypatch.setattr(onnx_mod, "EXTERNAL_DATA_ABOVE", w.nbytes - 1)
    assert onnx_mod.save_onnx(model(), path) is True
    assert (tmp_path / "m.onnx.data").stat().st_size == w.nbytes and path.stat().st_size < 1000
    x = np.ones((2, 64), dtype=np.float32)
    assert np.allclose(ort.InferenceSession(str(path)).run(None, {"x": x})[0], x @ w, rtol=1e-6)
    onnx_mod.stamp(path, {"k": "v"})  # metadata: only the .onnx is rewritten
    assert ort.InferenceSession(str(path)).get_modelmeta().custom_metadata_map["k"] == "v"
    (tmp_path / "sub").mkdir()
    onnx_mod.move_onnx(path, tmp_path / "sub" / "m.onnx")  # same name: renamed, data file with it
    assert (tmp_path / "sub" / "m.onnx.data").exists() and not (tmp_path / "m.onnx.data").exists()
    onnx_mod.move_onnx(tmp_path / "sub" / "m.onnx", tmp_path / "other.onnx")  # another name: rewritten
    assert (tmp_path / "other.onnx.data").exists() and not list((tmp_path / "sub").iterdir())
    saved = onnx.load(str(tmp_path / "other.onnx"), load_external_data=False)
    assert saved.graph.initializer[0].external_data[0].value == "other.onnx.data"
    monkeypatch.setattr(onnx_mod, "EXTERNAL_DATA_ABOVE", w.nbytes)
    assert onnx_mod.save_onnx(model(), tmp_path / "other.onnx") is False
    assert not (tmp_path / "other.onnx.data").exists()  # no stale data file next to a single-file model
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.onnx", "sub"]  # no work dirs or temp files left


def test_every_onnx_variant_past_the_threshold_has_external_data_and_scores_the_same(exported, external):
    """With the threshold at 0, each ONNX variant is the .onnx plus its data file next to it; it loads in ONNX Runtime,
    gives the single-file export's scores and quality, and the manifest, checksums.json and verify know its files."""
    import onnx

    from slmrec_cli.export.files import variant_files, verify
    from slmrec_cli.export.onnx import onnx_scorer, session

    _, _, single, single_result = exported
    out, result = external
    manifest = json.loads((out / "config.json").read_text())
    sums = json.loads((out / "checksums.json").read_text())["sha256"]
    n_items = manifest["n_items"]
    x = histories(n_items, batch=6, length=9, seed=7)
    for variant, name in ONNX.items():
        data = out / f"{name}.data"
        assert data.is_file() and data.stat().st_mode & 0o044 == (out / name).stat().st_mode & 0o044, variant
        inline = [t.name for t in onnx.load(str(out / name), load_external_data=False).graph.initializer
                  if t.data_location != onnx.TensorProto.EXTERNAL and len(t.raw_data) > 1024]
        assert not inline, (variant, inline)  # every tensor over 1 KiB is in the data file
        assert not (single / f"{name}.data").exists()  # the shared export, under the threshold: one file each
        entry = manifest["variants"][variant]
        assert entry["external_data"] == f"{name}.data" and sorted(entry["files"]) == sorted([name, f"{name}.data"])
        assert name in sums and f"{name}.data" in sums
        assert variant_files(out, variant) == sorted([name, f"{name}.data"])
        verify(out, variant_files(out, variant))
        got = onnx_scorer(session(out / name, threads=1))(x)
        ref = onnx_scorer(session(single / name, threads=1))(x)
        assert torch.equal(got, ref), variant
    q1 = {v["name"]: v for v in result["quality"]["variants"]}
    q0 = {v["name"]: v for v in single_result["quality"]["variants"]}
    for variant in ONNX:
        assert q1[variant]["metrics"] == q0[variant]["metrics"], variant
        assert q1[variant]["bytes"] > (out / ONNX[variant]).stat().st_size  # the data file counts
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no work dir or temp file shipped
    card = (out / "README.md").read_text()
    assert "model.onnx.data" in card and "keep it next to `model.onnx`" in card and "same folder" in card


def test_a_damaged_or_missing_data_file_is_refused(external, tmp_path, capsys):
    from slmrec_cli.export.files import variant_files, verify

    out, _ = external
    copy = tmp_path / "exp"
    shutil.copytree(out, copy)
    data = copy / "model.onnx.data"
    data.write_bytes(data.read_bytes()[:-8])
    with pytest.raises(SlmrecError, match=r"model\.onnx\.data is damaged"):
        verify(copy, variant_files(copy, "onnx-fp32"))
    raw = (copy / "item_map.tsv").read_text().splitlines()[1].split("\t")[1]
    code, _, err = run_cli(["recommend", "--export", copy, "--history", raw, "--variant", "onnx-fp32"], capsys)
    assert code == 2 and "model.onnx.data is damaged" in err and "Traceback" not in err
    (copy / "model.fp16.onnx.data").unlink()
    code, _, err = run_cli(["recommend", "--export", copy, "--history", raw, "--variant", "onnx-fp16"], capsys)
    assert code == 2 and "model.fp16.onnx.data is missing" in err


def test_fp16_variant_for_the_cuda_provider(exported, tmp_path, capsys):
    """onnx-fp16: fp16 weights, int64 in and float32 out, the head in fp32; meant for CUDAExecutionProvider (manifest
    and metadata); checked against torch with its looser tolerance and scored where it runs (here ONNX Runtime's
    CPU provider, which has the kernels in onnxruntime 1.2x+), and quality.json says where."""
    import onnx
    import onnxruntime as ort

    _, run, out, result = exported
    model = onnx.load(str(out / "model.fp16.onnx"))
    types = {t.data_type for t in model.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in types
    assert [i.type.tensor_type.elem_type for i in model.graph.input] == [onnx.TensorProto.INT64]
    assert [o.type.tensor_type.elem_type for o in model.graph.output] == [onnx.TensorProto.FLOAT] * 2
    quality = result["quality"]
    assert "/MatMul" in quality["onnx_fp16_fp32_nodes"]  # the item scores stay fp32
    manifest = json.loads((out / "config.json").read_text())
    assert manifest["variants"]["onnx-fp16"]["meant_for"] == ["CUDAExecutionProvider"]
    assert manifest["variants"]["onnx-int8"]["meant_for"] == ["CPUExecutionProvider"]
    meta = ort.InferenceSession(str(out / "model.fp16.onnx")).get_modelmeta().custom_metadata_map
    assert meta["variant"] == "onnx-fp16" and meta["meant_for"] == "CUDAExecutionProvider"
    check = quality["onnx_check"]["onnx-fp16"]
    assert check["passed"] and check["rtol"] > quality["onnx_check"]["onnx-fp32"]["rtol"]
    assert check["max_abs_diff"] <= check["tolerance"] == check["atol"] + check["rtol"] * check["max_abs_torch"]
    fp16 = next(v for v in quality["variants"] if v["name"] == "onnx-fp16")
    assert fp16["measured_on"] == "ort/cpu" and fp16["relative_mrr"] >= 0.95
    assert "not_measured" not in quality
    assert "onnx-fp16" in (out / "README.md").read_text()
    code, _, err = run_cli(["export", "--run", run, "--out", tmp_path / "x", "--format", "safetensors",
                            "--quantize", "fp16"], capsys)
    assert code == 2 and "add onnx to --format" in err and not (tmp_path / "x").exists()


def test_fp16_that_no_runtime_here_can_run_is_listed_as_not_measured(exported, monkeypatch):
    """An ONNX Runtime without CPU fp16 kernels and no CUDA: the export keeps onnx-fp16, quality.json lists it under
    not_measured with the reason, and the card says so."""
    import slmrec_cli.export.quality as quality_mod
    from slmrec_cli.data import load_dataset
    from slmrec_cli.export.card import quality_table
    from slmrec_cli.export.variants import present

    data, _, out, _ = exported
    real = quality_mod.scorer

    def scorer(v, export_dir, runtime, provider, threads=None):
        if v.name == "onnx-fp16":
            raise SlmrecError("ONNX Runtime cannot load model.fp16.onnx (no kernel for Cast(19) in float16)")
        return real(v, export_dir, runtime, provider, threads)

    monkeypatch.setattr(quality_mod, "scorer", scorer)
    variants = [v for v in present(out) if v.name in ("torch-fp32", "onnx-fp16")]
    q = quality_mod.measure_quality(out, variants, 64, load_dataset(data))
    assert [v["name"] for v in q["variants"]] == ["torch-fp32"]
    assert q["not_measured"][0]["name"] == "onnx-fp16" and "ort/cpu: " in q["not_measured"][0]["why"]
    assert "not measured here" in quality_table(q)
    monkeypatch.setattr(quality_mod, "scorer", lambda *a, **k: (_ for _ in ()).throw(SlmrecError("damaged")))
    with pytest.raises(SlmrecError, match="damaged"):  # any other variant that cannot load fails the export
        quality_mod.measure_quality(out, variants[:1], 64, load_dataset(data))


def test_onnx_check_is_relative_and_recorded(exported):
    """max |onnx - torch| <= atol + rtol * max |torch|, per variant; what was measured is in quality.json; a model
    that drifts past it is refused."""
    import copy

    from slmrec_cli.export.build import checked
    from slmrec_cli.export.model import load_export
    from slmrec_cli.export.onnx import TOLERANCES, check_onnx

    _, _, out, result = exported
    fp32 = result["quality"]["onnx_check"]["onnx-fp32"]
    assert {k: fp32[k] for k in ("atol", "rtol")} == TOLERANCES["onnx-fp32"]
    assert fp32["passed"] and fp32["max_abs_diff"] == result["quality"]["onnx_max_abs_diff"]
    assert fp32["onnx_on"] == "ort/cpu" and fp32["torch_on"] == "cpu" and fp32["max_abs_torch"] > 0
    rec, manifest = load_export(out)
    again = check_onnx(rec, out / "model.onnx", manifest["n_items"])
    assert again["max_abs_diff"] == fp32["max_abs_diff"]
    drifted = copy.deepcopy(rec)
    with torch.no_grad():
        drifted.down.bias += 10 * TOLERANCES["onnx-fp32"]["rtol"] * fp32["max_abs_torch"]
    bad = check_onnx(drifted, out / "model.onnx", manifest["n_items"])
    assert not bad["passed"] and bad["max_abs_diff"] > bad["tolerance"]
    with pytest.raises(RuntimeError, match=r"onnx-fp32 disagrees with torch: .* > .*atol .* rtol"):
        checked(drifted, out / "model.onnx", manifest, "onnx-fp32", "cpu")
    # the fp16 tolerance is looser: the same drift passes it
    assert check_onnx(drifted, out / "model.onnx", manifest["n_items"], "onnx-fp16")["passed"]


def test_merge_runs_where_the_run_trained_and_in_fp32(exported, tmp_path, monkeypatch):
    """merge_run loads the base as the run trained on it and merges in fp32 (here: a bf16 base, as CUDA loads it,
    simulated on the CPU); auto picks the run's device when that GPU is visible, else the CPU."""
    import slmrec_cli.stages.export as stage
    from slmrec_cli.export.model import merge_run, run_device
    from slmrec_cli.runs import Run

    _, run, _, result = exported
    assert result["quality"]["merge"] == {"device": "cpu", "base_loaded_as": "float32", "merged_in": "float32",
                                          "run_trained_on": "cpu", "run_precision": "fp32",
                                          "run_quantization": "none"}
    ref = merge_run(Run.load(run))
    real = Run.load_model

    def bf16_load(self, device="cpu", quantization="run"):
        model = real(self, device, quantization)
        model.decoder.to(torch.bfloat16)  # what load_backbone gives on CUDA
        return model

    monkeypatch.setattr(Run, "load_model", bf16_load)
    rec = merge_run(Run.load(run))
    assert rec.merge_info["base_loaded_as"] == "bfloat16" and rec.merge_info["merged_in"] == "float32"
    assert {p.dtype for p in rec.parameters()} == {torch.float32} and rec.decoder.config.dtype == torch.float32
    x = histories(rec.id_table.shape[0] - 1, batch=6, length=9, seed=7)
    with torch.no_grad():  # the bf16-rounded base, merged in fp32: close to the fp32 merge, not equal
        a, b = rec.score_all(x), ref.score_all(x)
    assert (a - b).abs().max() <= 0.05 * b.abs().max()
    monkeypatch.setattr(Run, "load_model", real)

    copy = tmp_path / run.name
    shutil.copytree(run, copy)
    assert run_device(Run.load(copy)) == "cpu"
    eff = json.loads((copy / "efficiency.json").read_text())
    (copy / "efficiency.json").write_text(json.dumps({**eff, "device": "cuda:NVIDIA H200"}))
    assert run_device(Run.load(copy)) == "cuda"
    assert stage.auto_device(Run.load(copy)) == "cpu"  # no GPU visible here: the CPU, in fp32
    monkeypatch.setattr(stage.torch.cuda, "is_available", lambda: True)
    assert stage.auto_device(Run.load(copy)) == "cuda" and stage.auto_device(Run.load(run)) == "cpu"


def test_iobinding_and_node_placement_on_the_cpu(exported):
    """The CUDA benchmark's pieces, run on the CPU provider: IOBinding gives sess.run's scores; the placement (graph
    assignment API, and the profiling fallback for older ONNX Runtime) puts every node on the CPU provider, which
    placement_off reports as all elsewhere than CUDA."""
    from slmrec_cli.export.bench import node_placement, ort_placement, placement_off, profiled_placement
    from slmrec_cli.export.onnx import onnx_scorer, session

    _, _, out, _ = exported
    manifest = json.loads((out / "config.json").read_text())
    sess = session(out / "model.onnx", threads=1)
    x = histories(manifest["n_items"], batch=6, length=9, seed=7)
    plain, bound = onnx_scorer(sess), onnx_scorer(sess, io_binding=True)
    assert torch.equal(plain(x), bound(x)) and bound.session is sess
    placed = node_placement(sess)
    assert placed is not None and set(placed) == {"CPUExecutionProvider"}
    ops = {op for op, _ in placed["CPUExecutionProvider"]}
    assert "MatMul" in ops or "FusedMatMul" in ops
    profiled = profiled_placement(out / "model.onnx", "cpu", x.numpy())
    assert set(profiled) == {"CPUExecutionProvider"} and len(profiled["CPUExecutionProvider"]) > 10
    off = placement_off(placed)
    assert off["elsewhere"] == off["nodes"] == len(placed["CPUExecutionProvider"]) and off["elsewhere_ops"]
    assert placement_off(placed, "CPUExecutionProvider")["elsewhere"] == 0
    assert ort_placement(bound, out / "model.onnx", "cpu", manifest["n_items"], manifest["max_len"])["elsewhere"] == 0


def test_bench_cuda_path_records_iobinding_and_placement(exported, monkeypatch):
    """run_bench's ONNX Runtime CUDA branch, with the CUDA provider stood in for by the CPU one: rows say io_binding
    and bench.json gets each ONNX variant's placement (here every node "elsewhere" than CUDA, so the rows say their
    compute ran on cuda+cpu)."""
    import slmrec_cli.stages.export as stage
    from slmrec_cli.export.onnx import onnx_scorer, session
    from slmrec_cli.export.variants import present

    _, _, out, _ = exported
    real = stage.scorer

    def scorer(v, export_dir, runtime, provider, threads=None):
        if runtime == "ort" and provider == "cuda":  # the CPU provider standing in, through the same IOBinding code
            v.verify()
            return onnx_scorer(session(v.path, threads=1), io_binding=True), None
        return real(v, export_dir, runtime, provider, threads)

    monkeypatch.setattr(stage, "scorer", scorer)
    monkeypatch.setattr(stage, "ort_cuda_available", lambda: True)
    variants = [v for v in present(out) if v.name in ("onnx-fp32", "onnx-fp16")]
    bench = stage.run_bench(out, variants, [2], 1, 0.0)
    assert {(r["variant"], r["provider"], r["io_binding"]) for r in bench["results"]} == {
        ("onnx-fp32", "cpu", False), ("onnx-fp32", "cuda+cpu", True), ("onnx-fp16", "cpu", False),
        ("onnx-fp16", "cuda+cpu", True)}
    placement = bench["ort_cuda_placement"]
    assert set(placement) == {"onnx-fp32", "onnx-fp16"}
    assert all(p["elsewhere"] == p["nodes"] > p["elsewhere_compute"] > 0 for p in placement.values())


def test_export_tables_show_where_each_variant_was_measured_and_the_checks(exported):
    """benchmarks/export_tables.py (the tables of docs/export.md): a 'measured on' column and each ONNX check."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("export_tables", Path(__file__).parents[1] / "benchmarks" /
                                                  "export_tables.py")
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)
    _, _, out, result = exported
    text = tables.quality_table([(result["quality"], None)])
    assert "measured on" in text and "| onnx-fp16 |" in text and "ort/cpu |" in text
    assert "onnx-fp32 " in text and "onnx-fp16 " in text and "tolerance" in text
