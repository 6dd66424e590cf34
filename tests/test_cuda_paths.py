"""The CUDA paths' defects predicted by issue 29, fixed and checked on the CPU by their logic: the provider options
ONNX Runtime gets, which provider each variant is given, what the fp16 graph keeps in fp32, what a failed check
records, and how the DDP wrapper is built. Nothing here pretends to run CUDA."""

import os
from pathlib import Path


class FakeSession:
    """Stands in for onnxruntime.InferenceSession: records the providers it was given and claims them all."""

    made: list = []

    def __init__(self, path, opts=None, providers=None):
        self.providers = providers
        FakeSession.made.append(self)

    def get_providers(self):
        return [p if isinstance(p, str) else p[0] for p in self.providers]


def test_cuda_sessions_compute_fp32_in_fp32_not_tf32(monkeypatch, tmp_path):
    """Defect 1: every CUDA session slmrec creates passes use_tf32 "0" (ONNX Runtime's CUDA provider defaults to TF32,
    torch's fp32 does not), as ONNX Runtime itself normalizes the options; the CPU list has no CUDA entry."""
    import onnxruntime as ort
    from onnxruntime.capi.onnxruntime_inference_collection import check_and_normalize_provider_args

    import slmrec_cli.export.onnx as onnx_mod
    from slmrec_cli.export.onnx import ort_providers

    assert ort_providers("cpu") == ["CPUExecutionProvider"]
    names, options = check_and_normalize_provider_args(ort_providers("cuda", 1), None,
                                                       ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert names == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert options == [{"device_id": "1", "use_tf32": "0"}, {}]

    # session() builds its CUDA session from that list, on the current CUDA device
    monkeypatch.setattr(onnx_mod.torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(ort, "InferenceSession", FakeSession)
    FakeSession.made.clear()
    onnx_mod.session(tmp_path / "model.onnx", provider="cuda")
    assert FakeSession.made[-1].providers == ort_providers("cuda", 0)
    assert FakeSession.made[-1].providers[0][1]["use_tf32"] == "0"
    onnx_mod.session(tmp_path / "model.onnx", provider="cpu")
    assert FakeSession.made[-1].providers == ["CPUExecutionProvider"]



def test_int8_and_int4_run_on_the_cpu_provider_unless_cuda_is_asked_for(monkeypatch, tmp_path):
    """Defect 4: onnx-int8 (MatMulInteger, uint8 activations: no CUDA kernel) and onnx-int4 get ONNX Runtime's CUDA
    provider only when --device cuda asks, in the benchmark's runtimes and in recommend; fp32 and fp16 get it when
    ONNX Runtime has it."""
    import slmrec_cli.export.variants as variants_mod
    import slmrec_cli.stages.recommend as rec_mod
    from slmrec_cli.export.variants import Variant, runtimes

    cpu, both = [("ort", "cpu")], [("ort", "cpu"), ("ort", "cuda")]
    for name in ("onnx-int8", "onnx-int4"):
        v = Variant(name, tmp_path / name)
        assert runtimes(v, cuda=True, ort_cuda=True) == cpu
        assert runtimes(v, cuda=True, ort_cuda=True, cuda_asked=True) == both
        assert runtimes(v, cuda=True, ort_cuda=False, cuda_asked=True) == cpu
    for name in ("onnx-fp32", "onnx-fp16"):
        assert runtimes(Variant(name, tmp_path / name), cuda=True, ort_cuda=True) == both

    monkeypatch.setattr(variants_mod, "ort_cuda_available", lambda: True)
    assert [rec_mod.serving_provider("ort", "auto", n) for n in ("onnx-int8", "onnx-int4", "onnx-fp32", "onnx-fp16")] \
        == ["cpu", "cpu", "cuda", "cuda"]
    monkeypatch.setattr("slmrec_cli.devices.resolve_device", lambda spec: spec)  # a GPU "visible" for --device cuda
    assert rec_mod.serving_provider("ort", "cuda", "onnx-int8") == "cuda"
    assert rec_mod.serving_provider("ort", "cpu", "onnx-fp32") == "cpu"


def test_a_benchmark_row_says_where_its_compute_ran():
    """Defect 4: a row benchmarked on the CUDA provider is labelled cuda only when every compute node (MatMul family,
    quantization ops) is on it; MatMulInteger left to the CPU makes it cuda+cpu; shape ops on the CPU do not count."""
    from slmrec_cli.export.bench import placement_off, ran_on

    on_gpu = {"CUDAExecutionProvider": [["MatMul", "/a"], ["Softmax", "/s"]], "CPUExecutionProvider": [["Shape", "/h"]]}
    int8 = {"CUDAExecutionProvider": [["Softmax", "/s"]],
            "CPUExecutionProvider": [["DynamicQuantizeLinear", "/q"], ["MatMulInteger", "/m"], ["Shape", "/h"]]}
    assert placement_off(on_gpu)["elsewhere_compute"] == 0 and placement_off(int8)["elsewhere_compute"] == 2
    assert ran_on("cuda", placement_off(on_gpu)) == "cuda"
    assert ran_on("cuda", placement_off(int8)) == "cuda+cpu"
    assert ran_on("cuda", None) == "cuda" and ran_on("cpu", placement_off(int8)) == "cpu"


def test_bench_keeps_int8_on_the_cpu_provider_and_labels_what_ran(exported, monkeypatch):
    """Defect 4 through run_bench, the CPU provider standing in for CUDA: without --device, onnx-int8 is benchmarked on
    the CPU provider only and onnx-fp32 on both; with --device cuda, onnx-int8 runs on the "CUDA" provider as asked,
    and its rows say cuda+cpu, since its compute ran on the CPU provider (as it does here)."""
    import slmrec_cli.stages.export as stage
    from slmrec_cli.export.onnx import onnx_scorer, session
    from slmrec_cli.export.variants import present

    _, _, out, _ = exported
    real = stage.scorer

    def scorer(v, export_dir, runtime, provider, threads=None):
        if runtime == "ort" and provider == "cuda":
            return onnx_scorer(session(v.path, threads=1), io_binding=True), None
        return real(v, export_dir, runtime, provider, threads)

    monkeypatch.setattr(stage, "scorer", scorer)
    monkeypatch.setattr(stage, "ort_cuda_available", lambda: True)
    variants = [v for v in present(out) if v.name in ("onnx-fp32", "onnx-int8")]
    rows = stage.run_bench(out, variants, [2], 1, 0.0)["results"]
    assert {(r["variant"], r["provider"], r["io_binding"]) for r in rows} == {
        ("onnx-fp32", "cpu", False), ("onnx-fp32", "cuda+cpu", True), ("onnx-int8", "cpu", False)}
    bench = stage.run_bench(out, variants[1:], [2], 1, 0.0, device="cuda")
    assert [(r["variant"], r["provider"], r["io_binding"]) for r in bench["results"]] == [
        ("onnx-int8", "cuda+cpu", True)]
    assert bench["ort_cuda_placement"]["onnx-int8"]["elsewhere_ops"]["MatMulInteger"] > 0


def test_fp16_graph_keeps_the_norm_statistic_in_fp32(tiny_runs, tmp_path):
    """Defect 3: with a residual stream past 256 (the up-projection scaled by 1000), Pow(x, 2) overflows fp16. The
    fp16 graph keeps each RMSNorm's Pow → ReduceMean → Add → Sqrt → Div in fp32 with no fp16 step between them, its
    nodes are in the topological order ONNX requires, and computed in true fp16 arithmetic (onnx's reference evaluator,
    as the CUDA provider's fp16 kernels compute; ONNX Runtime's CPU provider runs the fp16 ops it lacks in fp32, which
    would hide the overflow) its user vectors agree with torch's."""
    import numpy as np
    import onnx
    import torch
    from onnx.reference import ReferenceEvaluator

    from slmrec_cli.export.model import merge_run
    from slmrec_cli.export.onnx import TOLERANCES, export_onnx, padded_histories
    from slmrec_cli.export.onnx_quant import convert_fp16
    from slmrec_cli.runs import Run

    _, _, run = tiny_runs
    rec = merge_run(Run.load(run))
    with torch.no_grad():
        rec.up.weight *= 1000
        rec.up.bias *= 1000
    seen = []
    hook = rec.decoder.layers[0].input_layernorm.register_forward_hook(lambda m, i, o: seen.append(i[0].abs().max()))
    n_items = rec.id_table.shape[0] - 1
    histories = list(padded_histories(n_items, rec.max_len))
    with torch.no_grad():
        ref = [rec(torch.from_numpy(items)).numpy() for items in histories]
    hook.remove()
    assert max(seen) > 256  # x² past fp16's 65504

    export_onnx(rec, tmp_path / "model.onnx")
    info = convert_fp16(tmp_path / "model.onnx", tmp_path / "model.fp16.onnx")
    model = onnx.load(str(tmp_path / "model.fp16.onnx"))
    onnx.checker.check_model(model)  # topologically sorted
    graph = onnx.shape_inference.infer_shapes(model).graph
    dtype = {v.name: v.type.tensor_type.elem_type for v in graph.value_info}
    producer = {o: n for n in graph.node for o in n.output}
    pows = [n for n in graph.node if n.op_type == "Pow"]
    assert len(pows) == 2 * len(rec.decoder.layers) + 1 and set(info["onnx_fp16_fp32_norm_nodes"]) >= {
        n.name for n in pows}
    for node in graph.node:
        if node.op_type in ("Pow", "ReduceMean", "Sqrt"):
            assert dtype[node.input[0]] == dtype[node.output[0]] == onnx.TensorProto.FLOAT, node.name
        if node.op_type in ("ReduceMean", "Add", "Sqrt") and node.name in info["onnx_fp16_fp32_norm_nodes"]:
            assert producer[node.input[0]].op_type in ("Pow", "ReduceMean", "Add"), node.name  # no Cast between

    fp16 = ReferenceEvaluator(model)
    tol = TOLERANCES["onnx-fp16"]
    for items, want in zip(histories, ref, strict=True):
        got = fp16.run(["user"], {"items": items})[0]
        assert np.isfinite(got).all()
        assert np.abs(got - want).max() <= tol["atol"] + tol["rtol"] * np.abs(want).max()


def test_a_failed_fp16_check_is_recorded_and_the_export_goes_on(tiny_runs, tmp_path, monkeypatch, capsys):
    """Defect 3: onnx-fp16 past its tolerance (here made 0) no longer aborts the export: quality.json records the
    check and the variant under `failed`, its file is left out (so nothing serves it; recommend says why), and the
    fp32 variants are measured as usual."""
    import json

    import slmrec_cli.export.onnx as onnx_mod
    from slmrec_cli.config.export import ExportConfig
    from slmrec_cli.export.variants import present
    from slmrec_cli.stages.export import export
    from tests.helpers import run_cli

    _, _, run = tiny_runs
    monkeypatch.setitem(onnx_mod.TOLERANCES, "onnx-fp16", {"atol": 0.0, "rtol": 0.0})
    out = tmp_path / "exp"
    quality = export(run, out, ExportConfig(format=["onnx"], quantize=["fp16"], threads=1))["quality"]
    assert quality["failed"] == [{"name": "onnx-fp16", "why": quality["failed"][0]["why"]}]
    assert "onnx-fp16 disagrees with torch" in quality["failed"][0]["why"]
    assert quality["onnx_check"]["onnx-fp16"]["passed"] is False and quality["onnx_check"]["onnx-fp32"]["passed"]
    assert [v["name"] for v in quality["variants"]] == ["torch-fp32", "onnx-fp32"]
    assert not (out / "model.fp16.onnx").exists() and "onnx-fp16" not in [v.name for v in present(out)]
    assert "onnx-fp16" not in json.loads((out / "config.json").read_text())["variants"]
    assert json.loads((out / "quality.json").read_text())["failed"] == quality["failed"]
    assert "failed its check, left out" in (out / "README.md").read_text()
    raw = (out / "item_map.tsv").read_text().splitlines()[1].split("\t")[1]
    code, _, err = run_cli(["recommend", "--export", out, "--history", raw, "--variant", "onnx-fp16"], capsys)
    assert code == 2 and "failed its check against torch at export" in err


def test_ddp_wraps_without_broadcasting_the_frozen_buffers():
    """Defect 10: the Accelerator carries a DDP handler whose kwargs (what accelerate's prepare passes to
    DistributedDataParallel) turn off the buffer broadcast before every forward: the frozen id table stays put."""
    from accelerate.utils import DistributedDataParallelKwargs

    from slmrec_cli.config.train import TrainArgs
    from slmrec_cli.train.accelerator import make_accelerator

    acc = make_accelerator(TrainArgs(epochs=1))
    assert isinstance(acc.ddp_handler, DistributedDataParallelKwargs)
    assert acc.ddp_handler.to_kwargs() == {"broadcast_buffers": False}


def test_fp16_schedule_waits_when_the_scaler_skips_a_step():
    """Defect 6: accelerate's optimizer with a gradient scaler (fp16) skips a step whose gradients overflowed; the
    learning-rate schedule does not move on that step (engine.step_schedule), and moves on the next real one. Run
    with torch's CPU GradScaler, the same class CUDA's fp16 uses."""
    import torch
    from accelerate import Accelerator
    from accelerate.optimizer import AcceleratedOptimizer

    from slmrec_cli.train.engine import cosine_with_warmup, step_schedule

    Accelerator(cpu=True)  # accelerate's optimizer wrapper needs its state
    p = torch.nn.Parameter(torch.ones(3))
    scaler = torch.amp.GradScaler("cpu")
    optimizer = AcceleratedOptimizer(torch.optim.SGD([p], lr=0.1), device_placement=False, scaler=scaler)
    scheduler = cosine_with_warmup(optimizer.optimizer, 2, 10)
    lrs = [scheduler.get_last_lr()[0]]
    for weight in (float("inf"), 1.0, 1.0):
        optimizer.zero_grad()
        scaler.scale((p * torch.tensor([weight, 1.0, 1.0])).sum()).backward()
        optimizer.step()
        step_schedule(optimizer, scheduler)
        lrs.append(scheduler.get_last_lr()[0])
    assert lrs[1] == lrs[0] < lrs[2] < lrs[3]  # the overflowed step left the warm-up where it was


def test_fp16_training_loads_the_base_in_fp16_with_fp32_adapters():
    """Defect 6: under --mixed-precision fp16 the frozen base loads in float16 (not CUDA's default bfloat16, which
    would meet fp16 autocast); LoRA and the projections stay float32, as the gradient scaler needs."""
    import torch

    from slmrec_cli.config.models import LLMRecConfig
    from slmrec_cli.models.build import build_model
    from slmrec_cli.train.accelerator import base_dtype

    class Acc:
        mixed_precision = "fp16"

    assert base_dtype(Acc()) == torch.float16
    Acc.mixed_precision = "bf16"
    assert base_dtype(Acc()) is None
    cfg = LLMRecConfig(layers=2, max_len=8, lora_r=4, lora_alpha=8, n_items=20, id_dim=8)
    model, _ = build_model(cfg, "tiny-random", torch.randn(21, 8), dtype=torch.float16)
    dtypes = {n: p.dtype for n, p in model.named_parameters()}
    assert {d for n, d in dtypes.items() if "lora_" not in n and not n.startswith(("up", "down"))} == \
        {torch.float16}
    assert {d for n, d in dtypes.items() if "lora_" in n or n.startswith(("up", "down"))} == {torch.float32}


def test_bnb_variants_are_made_and_run_in_the_devices_compute_dtype(monkeypatch, tmp_path):
    """Defect 5: a bitsandbytes variant is quantized on the export's device (export.build passes it) and, on CUDA,
    nf4 computes in bfloat16 with bfloat16 activations (QLoRA's path), not fp32 as on the CPU."""
    import torch

    from slmrec_cli.export import bnb

    assert bnb.config("nf4", "cuda:0").bnb_4bit_compute_dtype == torch.bfloat16
    assert bnb.config("nf4", "cpu").bnb_4bit_compute_dtype == torch.float32
    assert bnb.config("int8", "cuda").load_in_8bit
    assert bnb.compute_dtype("cuda") == torch.bfloat16 and bnb.compute_dtype("cpu") == torch.float32
    seen = {}

    class Decoder:
        def save_pretrained(self, path):
            (Path(path) / "model.safetensors").write_bytes(b"")

    def load(folder, device, **kw):
        seen.update(device=device, **kw)
        return Decoder()

    monkeypatch.setattr(bnb, "_load", load)
    (tmp_path / "head.safetensors").write_bytes(b"head")
    bnb.quantize_bnb(tmp_path, "nf4", tmp_path / "bnb-nf4", device="cuda")
    assert seen["device"] == "cuda" and seen["dtype"] == torch.bfloat16
    assert seen["quantization_config"].bnb_4bit_compute_dtype == torch.bfloat16
    assert (tmp_path / "bnb-nf4" / "head.safetensors").read_bytes() == b"head"


def test_deterministic_turns_on_deterministic_kernels_and_changes_no_cpu_result(tmp_path, monkeypatch):
    """Defect 8: --deterministic sets torch's deterministic mode and cuBLAS's fixed workspace before training (what
    exact resume needs on CUDA); it is recorded in the run's config, and on the CPU (already deterministic) the run
    is the same as without it."""
    import json

    import torch

    from slmrec_cli.config.train import TrainArgs
    from tests.helpers import SASREC_TINY, make_dataset, sasrec_run

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    data = make_dataset(tmp_path)
    plain = sasrec_run(data, tmp_path / "plain", SASREC_TINY, TrainArgs(epochs=2, batch_size=16))
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        exact = sasrec_run(data, tmp_path / "exact", SASREC_TINY, TrainArgs(epochs=2, batch_size=16,
                                                                           deterministic=True))
        assert torch.are_deterministic_algorithms_enabled()
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    finally:
        torch.use_deterministic_algorithms(False)
    assert json.loads((tmp_path / "exact" / "config.json").read_text())["train"]["deterministic"] is True
    assert [r["metrics"] for r in exact["records"]] == [r["metrics"] for r in plain["records"]]


def test_evaluation_scores_are_fp32_inside_autocast(tiny_runs):
    """Defect 9: what evaluation ranks by (score_all) is an fp32 matmul even inside a bf16 autocast region, for the
    LLM models and SASRec alike (under autocast the matmul would run in bf16 and tie close items)."""
    import torch

    from slmrec_cli.runs import Run

    data, sasrec, teacher = tiny_runs
    items = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    for run in (sasrec, teacher):
        model = Run.load(run).load_model("cpu")
        with torch.no_grad():
            plain = model.score_all(items)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                users = model.user_vectors(items)
                scores = model.score_all(items)
        assert scores.dtype == torch.float32
        expected = users.float() @ (model.id_table if hasattr(model, "id_table") else model.item_table()).float().T
        torch.testing.assert_close(scores, expected)
        assert plain.dtype == torch.float32
