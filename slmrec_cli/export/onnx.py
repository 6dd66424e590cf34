"""ONNX: export with dynamic batch and sequence axes, sessions on each execution provider, the check against torch;
every file written whole, with its initializers in a data file next to it when they pass protobuf's 2 GiB limit.
Quantization and fp16: export.onnx_quant."""

from __future__ import annotations

import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.export.files import external_data_name
from slmrec_cli.export.model import Recommender, WithScores
from slmrec_cli.io import atomic_path, writing

OPSET = 18
PROTOBUF_LIMIT = 2**31  # a serialized ModelProto cannot reach 2 GiB
# Initializers above this many bytes (the sum of their tensors' sizes) go to external data: protobuf's limit less
# 64 MiB for the graph, the metadata and the few tensors kept inline. A module constant so tests can set it low.
EXTERNAL_DATA_ABOVE = PROTOBUF_LIMIT - 2**26
# The ONNX-vs-torch check of each float variant: max |onnx - torch| <= atol + rtol * max |torch| over the user
# vectors. fp32 differs from torch only by the order of operations; fp16 rounds every activation to 11 bits.
TOLERANCES = {"onnx-fp32": {"atol": 1e-5, "rtol": 1e-4}, "onnx-fp16": {"atol": 1e-3, "rtol": 2e-2}}


def need_onnxruntime():
    try:
        import onnxruntime as ort
    except ImportError:
        raise SlmrecError("ONNX export needs onnxruntime: pip install '.[cpu]' (or '.[gpu]' on CUDA)") from None
    return ort


# ---------------------------------------------------------------------------------------------- files


def tensor_bytes(tensor) -> int:
    """A TensorProto's size from its shape and type, wherever its data is (inline, external, or not loaded)."""
    from onnx.helper import tensor_dtype_to_np_dtype

    return int(np.prod(tensor.dims, dtype=np.int64)) * tensor_dtype_to_np_dtype(tensor.data_type).itemsize


def _tensors(graph) -> Iterator:
    """Every tensor a graph holds: its initializers and the tensors of its nodes' attributes (Constant values),
    subgraphs included."""
    from onnx import AttributeProto

    yield from graph.initializer
    for node in graph.node:
        for attr in node.attribute:
            if attr.type == AttributeProto.TENSOR:
                yield attr.t
            elif attr.type == AttributeProto.TENSORS:
                yield from attr.tensors
            elif attr.type == AttributeProto.GRAPH:
                yield from _tensors(attr.g)
            elif attr.type == AttributeProto.GRAPHS:
                for g in attr.graphs:
                    yield from _tensors(g)


def initializer_bytes(model) -> int:
    """The sum of the sizes of a model's tensors: what decides whether it needs external data."""
    return sum(tensor_bytes(t) for t in _tensors(model.graph))


@contextmanager
def onnx_work(path: Path) -> Iterator[Path]:
    """A private temp dir next to `path`, removed after: where an ONNX file is made under its final name, so that the
    external data location written into it (a name relative to the .onnx) is the one it keeps."""
    path = Path(path)
    with writing(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".work", dir=path.parent))
    try:
        yield work
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


def save_onnx(model, path: Path) -> bool:
    """Write `model` (a ModelProto holding its data) to `path`: one file, or, when its tensors pass
    EXTERNAL_DATA_ABOVE bytes, the .onnx plus every tensor over 1 KiB in one data file next to it
    (external_data_name). Both are written under their final names in a temp dir and renamed into place, the data
    file first; a data file left by an earlier version of `path` goes. `model` gives its data to the file: do not
    use it afterwards. Returns whether the data is external."""
    import onnx

    path = Path(path)
    external = initializer_bytes(model) > EXTERNAL_DATA_ABOVE
    data = path.with_name(external_data_name(path.name))
    with onnx_work(path) as work, writing(path):
        if external:
            onnx.save_model(model, str(work / path.name), save_as_external_data=True, all_tensors_to_one_file=True,
                            location=data.name, size_threshold=1024, convert_attribute=True)
            os.chmod(work / data.name, _file_mode())  # onnx creates it 0600: give it the usual permissions
            os.replace(work / data.name, data)
        else:
            onnx.save_model(model, str(work / path.name))
            if data.exists():
                data.unlink()
        os.replace(work / path.name, path)
    return external


def move_onnx(src: Path, dst: Path) -> None:
    """Move an ONNX file (and its data file) to `dst`; under another name it is rewritten, since the .onnx names its
    data file."""
    import onnx

    src, dst = Path(src), Path(dst)
    src_data = src.with_name(external_data_name(src.name))
    if src.name == dst.name:
        dst_data = dst.with_name(external_data_name(dst.name))
        with writing(dst):
            if src_data.exists():
                os.replace(src_data, dst_data)
            elif dst_data.exists():
                dst_data.unlink()
            os.replace(src, dst)
        return
    save_onnx(onnx.load(str(src)), dst)
    remove_onnx(src)


def remove_onnx(path: Path) -> None:
    """Delete an ONNX file and its data file."""
    path = Path(path)
    for f in (path, path.with_name(external_data_name(path.name))):
        if f.exists():
            f.unlink()


@contextmanager
def on_cpu(rec: torch.nn.Module) -> Iterator[torch.nn.Module]:
    """`rec` moved to the CPU for the block, then back where it was: ONNX is traced from a CPU module, whatever
    device merged and calibrates it."""
    device = next(rec.parameters()).device
    if device.type == "cpu":
        yield rec
        return
    rec.to("cpu")
    try:
        yield rec
    finally:
        rec.to(device)


def export_onnx(rec: Recommender, path: Path) -> bool:
    """`path` ← the recommender traced to ONNX (fp32); returns whether its data is external. torch writes a model
    past 2 GiB as one file per tensor: it writes into a private temp dir, and save_onnx rewrites what it wrote."""
    import onnx

    need_onnxruntime()
    path = Path(path)
    with on_cpu(rec), onnx_work(path) as work, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        wrapper = WithScores(rec).eval()
        example = torch.tensor([[0, 0, 1, 2, 3], [1, 2, 3, 4, 5]], dtype=torch.long)
        # the TorchScript exporter: no extra dependency, and the graph is plain tensor ops (checked below)
        torch.onnx.export(wrapper, (example,), str(work / "model.onnx"), input_names=["items"],
                          output_names=["user", "scores"],
                          dynamic_axes={"items": {0: "batch", 1: "length"}, "user": {0: "batch"},
                                        "scores": {0: "batch"}}, opset_version=OPSET, dynamo=False)
        return save_onnx(onnx.load(str(work / "model.onnx")), path)


def stamp(path: Path, props: dict[str, str]) -> None:
    """Set an ONNX file's metadata_props (ONNX Runtime: session.get_modelmeta().custom_metadata_map), replacing any.
    Done on every file once it is written: ONNX Runtime's quantizers keep a source's props (dynamic int8 adds its
    own), but the SmoothQuant int8 file is exported afresh from the smoothed copy, with none. Only the .onnx is
    rewritten: an external data file stays as it is."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    onnx.helper.set_model_props(model, props)
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))


# ---------------------------------------------------------------------------------------------- running


def ort_providers(provider: str = "cpu", device_id: int = 0) -> list:
    """ONNX Runtime's provider list for `provider` (cpu | cuda), first choice first. The CUDA provider computes fp32
    MatMuls in TF32 unless told not to (its `use_tf32` option, on by default), while torch's fp32 matmuls are full fp32
    (torch.backends.cuda.matmul.allow_tf32 is off by default, and slmrec leaves it): TF32 off, so fp32 nodes (all of
    onnx-fp32, the head of the others) compute what torch computes, and the fp32 check and benchmark rows are fp32's."""
    providers: list = ["CPUExecutionProvider"]
    if provider == "cuda":  # option values are strings; ONNX Runtime parses a bool from "0" or "1"
        providers.insert(0, ("CUDAExecutionProvider", {"device_id": str(device_id), "use_tf32": "0"}))
    return providers


_CUDA_LIBRARIES: dict[str, str] = {}


def load_cuda_libraries() -> str:
    """Before the first CUDA session: ONNX Runtime's own preload_dlls() (1.21+) loads the CUDA and cuDNN libraries of
    the nvidia-* wheels (the ones torch's CUDA build uses, and onnxruntime-gpu[cuda,cudnn] installs), so the CUDA
    provider does not depend on which libraries torch happened to load first. Returns "" or why it could not."""
    if "note" not in _CUDA_LIBRARIES:
        ort = need_onnxruntime()
        note = ""
        if hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception as e:  # a missing library shows again, with its name, when the session starts
                note = f"preload_dlls: {first_line(e)}"
        _CUDA_LIBRARIES["note"] = note
    return _CUDA_LIBRARIES["note"]


def session(path: Path, threads: int | None = None, provider: str = "cpu"):
    """An ORT session; for CUDA the provider list is checked after creation (it can silently fall back). Each
    session records which execution provider got each node (read by export.bench.node_placement)."""
    ort = need_onnxruntime()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if provider == "cuda":
        load_cuda_libraries()
    opts.add_session_config_entry("session.record_ep_graph_assignment_info", "1")  # ignored before ORT 1.24
    # on the current CUDA device (--device cuda:N sets it)
    providers = ort_providers(provider, torch.cuda.current_device() if provider == "cuda" else 0)
    try:
        sess = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as e:  # ONNX Runtime's errors are plain Exceptions (InvalidProtobuf, NoSuchFile, Fail, ...)
        raise SlmrecError(f"ONNX Runtime cannot load {path} ({first_line(e)}); export the run again") from None
    if provider == "cuda" and "CUDAExecutionProvider" not in sess.get_providers():
        raise SlmrecError("ONNX Runtime could not start its CUDA provider here; install onnxruntime-gpu with a "
                          "matching CUDA, or use the CPU")
    return sess


def onnx_scorer(sess, io_binding: bool = False):
    """score_all(items [B, T]) → scores [B, n_items + 1] (a CPU tensor) from an ORT session (kept as .session).
    io_binding: through IOBinding, the outputs allocated on the session's device and copied back once
    (copy_outputs_to_cpu), the well-kept way to run a CUDA session without ORT's per-call output allocation and
    copies; on the CPU it computes the same as sess.run (tested there)."""
    if not io_binding:
        def score_all(items: torch.Tensor) -> torch.Tensor:
            _, scores = sess.run(None, {"items": items.cpu().numpy().astype(np.int64)})
            return torch.from_numpy(scores)

        score_all.session = sess
        return score_all
    device = "cuda" if "CUDAExecutionProvider" in sess.get_providers() else "cpu"
    device_id = torch.cuda.current_device() if device == "cuda" else 0

    def bound(items: torch.Tensor) -> torch.Tensor:
        binding = sess.io_binding()
        binding.bind_cpu_input("items", np.ascontiguousarray(items.cpu().numpy().astype(np.int64)))
        for name in ("user", "scores"):
            binding.bind_output(name, device, device_id)
        sess.run_with_iobinding(binding)
        return torch.from_numpy(binding.copy_outputs_to_cpu()[1])  # [user, scores]

    bound.session = sess
    return bound


def padded_histories(n_items: int, max_len: int, seed: int = 0) -> Iterator[np.ndarray]:
    """Left-padded random histories in shapes not seen at export: batch 1, 3 and 7, lengths up to max_len + 4."""
    rng = np.random.default_rng(seed)
    for batch, length in ((1, 3), (3, 11), (7, max_len + 4)):
        items = rng.integers(1, n_items + 1, size=(batch, length))
        for row in range(batch):
            items[row, : rng.integers(0, length)] = 0  # various amounts of left padding
        items[:, -1] = rng.integers(1, n_items + 1, size=batch)
        yield items.astype(np.int64)


def check_onnx(rec: Recommender, path: Path, n_items: int, variant: str = "onnx-fp32", provider: str = "cpu",
               seed: int = 0) -> dict:
    """ONNX Runtime's user vectors against torch's (`rec`, wherever it is) on fresh random left-padded histories:
    the variant passes when max |onnx - torch| <= atol + rtol * max |torch| (TOLERANCES). What was measured, for
    quality.json; the caller refuses a variant that fails."""
    tol = TOLERANCES[variant]
    sess = session(path, threads=1 if provider == "cpu" else None, provider=provider)
    device = next(rec.parameters()).device
    diff = ref_max = 0.0
    for items in padded_histories(n_items, rec.max_len, seed):
        with torch.no_grad():
            ref = rec(torch.from_numpy(items).to(device)).float().cpu().numpy()
        got = sess.run(["user"], {"items": items})[0].astype(np.float32)
        diff, ref_max = max(diff, float(np.abs(ref - got).max())), max(ref_max, float(np.abs(ref).max()))
    tolerance = tol["atol"] + tol["rtol"] * ref_max
    return {"max_abs_diff": diff, "max_abs_torch": ref_max, **tol, "tolerance": tolerance,
            "passed": bool(diff <= tolerance), "onnx_on": f"ort/{provider}", "torch_on": str(device)}
