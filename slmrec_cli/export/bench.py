"""Latency benchmark: warm-up, then p50/p95 per call and users per second, per variant × runtime × batch."""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
import torch


def random_histories(batch: int, length: int, n_items: int, seed: int = 0) -> torch.Tensor:
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
