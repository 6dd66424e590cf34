"""ONNX: export with dynamic batch and sequence axes, check against torch, quantize (int8 block or dynamic, int4)."""

from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.export.model import Recommender, WithScores
from slmrec_cli.io import atomic_path

OPSET = 18


def need_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise SlmrecError("ONNX export needs onnxruntime: pip install '.[cpu]' (or '.[gpu]' on CUDA)") from None
    return ort


def export_onnx(rec: Recommender, path: Path) -> None:
    need_onnxruntime()
    wrapper = WithScores(rec).eval()
    example = torch.tensor([[0, 0, 1, 2, 3], [1, 2, 3, 4, 5]], dtype=torch.long)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the TorchScript exporter: no extra dependency, and the graph is plain tensor ops (checked below)
        torch.onnx.export(wrapper, (example,), str(tmp), input_names=["items"], output_names=["user", "scores"],
                          dynamic_axes={"items": {0: "batch", 1: "length"}, "user": {0: "batch"},
                                        "scores": {0: "batch"}}, opset_version=OPSET, dynamo=False)


def stamp(path: Path, props: dict[str, str]) -> None:
    """Set an ONNX file's metadata_props (ONNX Runtime: session.get_modelmeta().custom_metadata_map), replacing any.
    Done on every file once it is written: ONNX Runtime's quantizers keep a source's props (dynamic int8 adds its
    own), but the SmoothQuant int8 file is exported afresh from the smoothed copy, with none."""
    import onnx

    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, props)
    with atomic_path(path) as tmp:
        onnx.save(model, str(tmp))


def session(path: Path, threads: int | None = None, provider: str = "cpu"):
    """An ORT session; for CUDA the provider list is checked after creation (it can silently fall back)."""
    ort = need_onnxruntime()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    providers = ["CPUExecutionProvider"]
    if provider == "cuda":  # the current CUDA device (--device cuda:N sets it)
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": torch.cuda.current_device()}))
    try:
        sess = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # ONNX Runtime's errors are plain Exceptions (InvalidProtobuf, NoSuchFile, Fail, ...)
        raise SlmrecError(f"ONNX Runtime cannot load {path} ({first_line(e)}); export the run again") from None
    if provider == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        raise SlmrecError("ONNX Runtime could not start its CUDA provider here; install onnxruntime-gpu with a "
                          "matching CUDA, or use the CPU")
    return sess


def onnx_scorer(sess):
    def score_all(items: torch.Tensor) -> torch.Tensor:
        _, scores = sess.run(None, {"items": items.cpu().numpy().astype(np.int64)})
        return torch.from_numpy(scores)

    return score_all


def max_abs_diff(rec: Recommender, path: Path, n_items: int, seed: int = 0) -> float:
    """ORT vs torch user vectors on fresh random left-padded histories, in shapes not seen at export."""
    rng = np.random.default_rng(seed)
    sess = session(path, threads=1)
    worst = 0.0
    for batch, length in ((1, 3), (3, 11), (7, rec.max_len + 4)):
        items = rng.integers(1, n_items + 1, size=(batch, length))
        for row in range(batch):
            items[row, : rng.integers(0, length)] = 0  # various amounts of left padding
        items[:, -1] = rng.integers(1, n_items + 1, size=batch)
        with torch.no_grad():
            ref = rec(torch.from_numpy(items)).float().numpy()
        got = sess.run(["user"], {"items": items.astype(np.int64)})[0]
        worst = max(worst, float(np.abs(ref - got).max()))
    return worst


def int8_excluded_nodes(model_path: Path, outliers: bool = True) -> list[str]:
    """MatMuls left in fp32 by dynamic int8: the recommender head (up/down projections and the item scores: small,
    and where the ranking is decided) and, with `outliers`, the MLP down-projections. Dynamic int8 quantizes each
    activation tensor with one scale, and the down-projection's input carries the "massive activations" of LLMs that
    one scale cannot hold: quantizing everything halved MRR on the ml-100k student. After SmoothQuant
    (export/smooth.py) the down-projections quantize well and only the head stays fp32."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    head = ("/rec/up/", "/rec/down/")
    out = []
    for node in graph.node:
        if node.op_type not in ("MatMul", "Gemm"):
            continue
        top_level = node.name.count("/") == 1  # the item scoring (user @ table.T) sits outside the modules
        if (outliers and "down_proj" in node.name) or node.name.startswith(head) or top_level:
            out.append(node.name)
    return out


INT8_SCHEMES = ("smooth", "block", "dynamic")


@contextmanager
def quiet_quantizer():
    """ONNX Runtime's quantizers log every node at INFO (and advise pre-processing meant for CNNs): keep errors."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path, scheme: str) -> dict:
    """int8 ONNX; returns what was done, for quality.json.
    smooth: `src` is the SmoothQuant-ed model (export/smooth.py); ONNX Runtime dynamic quantization (per-channel
      int8 weights, one int8 scale per activation tensor at run time, MatMulInteger) of every MatMul but the head.
    block: every weight MatMul as int8 weights in blocks of 32 with their own scales, and int8 compute on activations
      quantized per block at run time (MatMulNBits, accuracy level 4). Block scales hold the outliers.
    dynamic: dynamic quantization of the unsmoothed model, with the outlier layers (int8_excluded_nodes) in fp32."""
    if scheme not in INT8_SCHEMES:
        raise SlmrecError(f"--int8-scheme must be one of {', '.join(INT8_SCHEMES)}, got '{scheme}'")
    if scheme == "block":
        matmul_nbits(src, dst, bits=8, accuracy_level=4)
        return {"onnx_int8_scheme": scheme}
    from onnxruntime.quantization import QuantType, quantize_dynamic

    excluded = int8_excluded_nodes(src, outliers=scheme == "dynamic")
    with quiet_quantizer(), atomic_path(dst) as tmp:
        quantize_dynamic(str(src), str(tmp), weight_type=QuantType.QInt8, per_channel=True,
                         nodes_to_exclude=excluded)
    return {"onnx_int8_scheme": scheme, "onnx_int8_fp32_nodes": excluded}


def quantize_int4(src: Path, dst: Path) -> None:
    """Block-wise 4-bit weight-only MatMul (blocks of 32, symmetric), fp32 compute."""
    matmul_nbits(src, dst, bits=4, accuracy_level=None)


def matmul_nbits(src: Path, dst: Path, *, bits: int, accuracy_level: int | None, block_size: int = 32) -> None:
    try:
        import onnx
        from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
    except ImportError as e:
        raise SlmrecError(f"int{bits} ONNX quantization needs onnx and onnx-ir ({e.name} is missing): "
                          "pip install '.[cpu]'") from None
    quant = MatMulNBitsQuantizer(onnx.load(str(src)), bits=bits, block_size=block_size, is_symmetric=True,
                                 accuracy_level=accuracy_level)
    with quiet_quantizer():
        quant.process()
    with atomic_path(dst) as tmp:
        quant.model.save_model_to_file(str(tmp), use_external_data_format=False)
