"""Latency benchmark: warm-up, then p50/p95 per call and users per second, per variant × runtime × batch."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def random_histories(batch: int, length: int, n_items: int, seed: int = 0) -> torch.Tensor:
    """[batch, length] random item ids, no padding: the benchmark's input (export.onnx.padded_histories are the
    left-padded ones of the ONNX check)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(1, n_items + 1, size=(batch, length)).astype(np.int64))


def time_calls(fn: Callable[[], object], *, warmup: int = 1, min_calls: int = 3, min_seconds: float = 1.0,
               max_calls: int = 50, slow_call: float = 15.0) -> list[float]:
    """Latencies of repeated calls after warm-up; a call slower than `slow_call` seconds is timed only once
    (bitsandbytes int8 on a CPU can take minutes at batch 512)."""
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    if warmup and (time.perf_counter() - t0) / warmup > slow_call:
        min_calls, min_seconds = 1, 0.0
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_calls or (time.perf_counter() - start < min_seconds and len(times) < max_calls):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_one(variant: str, runtime: str, provider: str, score: Callable[[torch.Tensor], object],
              batches: list[int], length: int, n_items: int, sync: Callable[[], None] | None = None,
              min_seconds: float = 1.0) -> list[dict]:
    rows = []
    for b in batches:
        items = random_histories(b, length, n_items, seed=b)

        def call(items=items):
            out = score(items)
            if sync:
                sync()
            return out

        times = np.asarray(time_calls(call, min_seconds=min_seconds)) * 1000
        p50 = float(np.percentile(times, 50))
        rows.append({"variant": variant, "runtime": runtime, "provider": provider, "batch": b, "p50_ms": p50,
                     "p95_ms": float(np.percentile(times, 95)), "users_per_s": b / (p50 / 1000),
                     "calls": len(times)})
    return rows


# ---------------------------------------------------------------------------------------------- ORT node placement


def node_placement(sess) -> dict[str, list[list[str]]] | None:
    """{execution provider: [[op_type, node name], ...]} of an ONNX Runtime session, from its graph assignment info
    (ONNX Runtime >= 1.24; export.onnx.session turns on "session.record_ep_graph_assignment_info"). Recorded after
    ONNX Runtime's basic graph optimizations. None where this ONNX Runtime cannot say (then: profiled_placement)."""
    get = getattr(sess, "get_provider_graph_assignment_info", None)
    if get is None:
        return None
    try:
        subgraphs = get()
    except Exception:  # not recorded for this session (ORT raises a plain Fail)
        return None
    out: dict[str, list[list[str]]] = {}
    for sub in subgraphs:
        out.setdefault(sub.ep_name, []).extend([n.op_type, n.name] for n in sub.get_nodes())
    return out


def profiled_placement(path, provider: str, items: np.ndarray) -> dict[str, list[list[str]]]:
    """The same from one profiled run: ONNX Runtime's profile (a Chrome trace) names the provider of every node it
    ran ("provider" in a "Node" event's args), after all graph optimizations (fused nodes under their fused names).
    For an ONNX Runtime without the graph assignment API."""
    import json
    import tempfile
    from pathlib import Path

    from slmrec_cli.export.onnx import need_onnxruntime, ort_providers

    ort = need_onnxruntime()
    with tempfile.TemporaryDirectory(prefix="slmrec-ort-profile-") as work:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(work) / "ort")
        providers = ort_providers(provider, torch.cuda.current_device() if provider == "cuda" else 0)
        sess = ort.InferenceSession(str(path), opts, providers=providers)
        sess.run(None, {"items": items})
        events = json.loads(Path(sess.end_profiling()).read_text())
    out: dict[str, list[list[str]]] = {}
    seen = set()
    for e in events:
        args = e.get("args") or {}
        if e.get("cat") != "Node" or not e.get("name", "").endswith("_kernel_time") or "provider" not in args:
            continue
        name = e["name"].removesuffix("_kernel_time")
        if name not in seen:
            seen.add(name)
            out.setdefault(args["provider"], []).append([args.get("op_name", "?"), name])
    return out


# Ops that carry a variant's compute: one of them left to another provider moves that work there (with copies both
# ways). ONNX Runtime puts small shape computations (Shape, Gather, Concat, ... of int64 shapes) on the CPU on purpose.
COMPUTE_OPS = frozenset({
    "MatMul", "Gemm", "FusedMatMul", "MatMulInteger", "MatMulIntegerToFloat", "DynamicQuantizeLinear",
    "DynamicQuantizeMatMul", "MatMulNBits", "Softmax", "Attention", "MultiHeadAttention", "LayerNormalization",
    "SkipLayerNormalization", "SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"})


def placement_off(placement: dict[str, list[list[str]]], provider: str = "CUDAExecutionProvider",
                  shown: int = 50) -> dict:
    """What of a session's graph is not on `provider`: counts, op types, the first `shown` nodes, and how many of them
    carry compute (COMPUTE_OPS: a MatMul there is a real fallback, a Shape is not)."""
    total = sum(len(nodes) for nodes in placement.values())
    off = [node for ep, nodes in placement.items() if ep != provider for node in nodes]
    ops: dict[str, int] = {}
    for op, _ in off:
        ops[op] = ops.get(op, 0) + 1
    return {"provider": provider, "nodes": total, "elsewhere": len(off), "elsewhere_ops": dict(sorted(ops.items())),
            "elsewhere_compute": sum(n for op, n in ops.items() if op in COMPUTE_OPS), "elsewhere_nodes": off[:shown],
            "by_provider": {ep: len(nodes) for ep, nodes in sorted(placement.items())}}


def ran_on(provider: str, placed: dict | None) -> str:
    """A benchmark row's provider, as it ran: "cuda" when ONNX Runtime's CUDA provider holds every compute node,
    "cuda+cpu" when some fell back to the CPU provider (placement_off's elsewhere_compute); as asked when the placement
    is unknown or the provider is not CUDA."""
    if provider != "cuda" or not placed:
        return provider
    return "cuda+cpu" if placed.get("elsewhere_compute") else "cuda"


def ort_placement(score_all, path, provider: str, n_items: int, length: int) -> dict | None:
    """placement_off of the session behind an ONNX scorer (onnx_scorer keeps it as .session), from the graph
    assignment API or else a profiled run; None when neither is available."""
    sess = getattr(score_all, "session", None)
    placement = node_placement(sess) if sess is not None else None
    if placement is None:
        try:
            placement = profiled_placement(path, provider, random_histories(2, length, n_items).numpy())
        except Exception:  # profiling unavailable: say nothing rather than fail the benchmark
            return None
    return placement_off(placement, "CUDAExecutionProvider" if provider == "cuda" else "CPUExecutionProvider")
