"""The CUDA paths' defects predicted by issue 29, fixed and checked on the CPU by their logic: the provider options
ONNX Runtime gets, which provider each variant is given, what the fp16 graph keeps in fp32, what a failed check
records, and how the DDP wrapper is built. Nothing here pretends to run CUDA."""


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

