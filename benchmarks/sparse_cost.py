"""What padding costs on sparse data, measured in ONE process: the padded path slmrec took before (every batch padded
to --max-len, SASRec scoring the whole catalogue at every slot) against the padding-free one (batches cut to their
longest real row, item scores at real slots only, in bounded chunks), on the same batches, then with --group-by-length,
and for the LLM teacher packed (its real tokens only, several windows to a row: models/packing.py, the default).

python benchmarks/sparse_cost.py --data data/beauty [--base-model smollm2-135m] [--threads 2] [--out cost.json]

- SASRec at its defaults (max_len 50, batch 128): s per training step (forward, backward, AdamW), times the epoch's
  steps = s per epoch; its peak memory (one child process per path, 4 steps: peak RSS above the RSS before them,
  AdamW's states included).
- The LLM teacher (8 layers of the base model, LoRA, causal targets, batch 32 windows of 30): s per step and per
  epoch, validation s per 1,000 users, peak memory, in the precision training would use on this CPU.
- SASRec at --big-items (1,000,000) synthetic items: peak RSS of one training step of batch 128 x 50 (child process).
The paths' steps are interleaved (A, B, C, A, B, C, ...), so a busy machine slows them alike; ratios are new / padded.
"""

from __future__ import annotations

import argparse
import copy
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

PATHS = ("padded", "trimmed", "trimmed+grouped", "packed")  # packed: the LLM's default; SASRec has no such path


def paths_for(kind: str) -> tuple[str, ...]:
    return PATHS if kind == "llm" else PATHS[:3]


def _status_mib(field: str) -> float:
    line = next(x for x in Path("/proc/self/status").read_text().splitlines() if x.startswith(field + ":"))
    return int(line.split()[1]) / 1024  # kB


def reset_peak() -> float:
    """Restart the peak-RSS count from now (Linux: clear_refs 5 resets VmHWM); returns the RSS now, MiB."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_mib("VmRSS")


def peak_mib() -> float:
    return _status_mib("VmHWM")


def sasrec_padded_loss(model, inputs, targets):
    """SASRec's loss before: logits at every slot of the padded window, padding dropped by ignore_index."""
    from slmrec_cli.models.scoring import item_logits

    states = model.encode(inputs)
    return F.cross_entropy(item_logits(states.reshape(-1, states.shape[-1]), model.item_table()),
                           targets.reshape(-1), ignore_index=0)


def sasrec_setup(data_dir: str):
    from slmrec_cli.config.models import SASRecConfig
    from slmrec_cli.data import load_dataset
    from slmrec_cli.models.sasrec import SASRec
    from slmrec_cli.stages.pretrain_ids import SASRecTask

    data = load_dataset(data_dir)
    torch.manual_seed(0)
    model = SASRec(SASRecConfig(n_items=data.n_items)).train()
    return data, SASRecTask(model, data, model.cfg.max_len)


def llm_setup(data_dir: str, base: str):
    from slmrec_cli.config.models import LLMRecConfig
    from slmrec_cli.data import load_dataset
    from slmrec_cli.models.build import build_model
    from slmrec_cli.train.llm_task import LLMRecTask

    data = load_dataset(data_dir)
    table = torch.randn(data.n_items + 1, 128, generator=torch.Generator().manual_seed(0)) * 0.1  # SASRec's width
    torch.manual_seed(0)
    model, _ = build_model(LLMRecConfig(n_items=data.n_items, id_dim=128, hidden=0, layers=8), base, table)
    return data, LLMRecTask(model.train(), data, "causal")


def batches_for(task, path: str, batch_size: int) -> list:
    from slmrec_cli.train.engine import epoch_batches

    return epoch_batches(task.n_examples, batch_size, 42, 0, lengths=task.lengths if "grouped" in path else None)


def step_fn(task, kind: str, path: str, autocast):
    """One training step (forward, backward, AdamW) of this path on a batch of example indices."""
    model = copy.deepcopy(task.model) if path != "padded" else task.model
    if kind == "llm":
        model.packed = path == "packed"
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3)

    def step(indices):
        if path == "padded":
            windows = task.windows[torch.from_numpy(indices)]
            items, targets = windows[:, :-1], windows[:, 1:] * (windows[:, :-1] != 0)
        else:
            b = task.batch(indices)
            items, targets = b.get("inputs", b.get("items")), b["targets"]
        with autocast():
            loss = sasrec_padded_loss(model, items, targets) if kind == "sasrec" and path == "padded" \
                else model(items, targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def time_paths(task, kind: str, batch_size: int, steps: int, autocast) -> dict:
    """Mean s per step of each path over `steps` batches (after one warm-up), steps interleaved across paths."""
    paths = paths_for(kind)
    fns = {p: step_fn(task, kind, p, autocast) for p in paths}
    order = {p: batches_for(task, p, batch_size) for p in paths}
    times = {p: [] for p in paths}
    for i in range(steps + 1):
        for p in paths:
            t0 = time.perf_counter()
            fns[p](order[p][i])
            if i:
                times[p].append(time.perf_counter() - t0)
    n_batches = len(order["padded"])
    return {p: {"s_per_step": float(np.mean(t)), "s_per_epoch": float(np.mean(t)) * n_batches, "steps_timed": steps,
                "steps_per_epoch": n_batches} for p, t in times.items()}


def validation_cost(task, users: int, eval_batch: int, autocast) -> dict:
    """s per 1,000 validation users (both protocols): the padded path pads every history to max_len, in user order."""
    from slmrec_cli.evaluation.evaluate import rank_split

    model, data = task.model.eval(), task.data
    max_len = model.cfg.max_len
    chosen = np.sort(np.random.default_rng(0).choice(data.n_users, size=min(users, data.n_users), replace=False))

    def padded(h):
        return model.score_all(F.pad(h, (max_len - h.shape[1], 0)))

    out = {}
    with torch.no_grad(), autocast():
        for path, score in (("padded", padded), ("trimmed", model.score_all), ("packed", model.score_all)):
            model.packed = path == "packed"
            t0 = time.perf_counter()
            rank_split(score, data, "valid", max_len=max_len, batch_size=eval_batch, users=chosen, desc=path)
            out[path] = (time.perf_counter() - t0) * 1000 / len(chosen)
    model.train()
    return out


def child(args) -> None:
    """--child KIND PATH: a few steps of one path in a fresh process; prints its peak memory (MiB) as JSON."""
    kind, path = args.child
    torch.set_num_threads(args.threads)
    if kind == "big":
        from slmrec_cli.config.models import SASRecConfig
        from slmrec_cli.models.sasrec import SASRec

        model = SASRec(SASRecConfig(n_items=args.big_items)).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        items = torch.randint(1, args.big_items + 1, (128, 51))
        t0 = time.perf_counter()
        model(items[:, :-1], items[:, 1:]).backward()
        opt.step()  # the whole process's peak RSS, model, gradients and AdamW's states included
        print(json.dumps({"peak_rss_mib": peak_mib(), "before_mib": 0.0, "step_s": time.perf_counter() - t0}))
        return
    data, task = sasrec_setup(args.data) if kind == "sasrec" else llm_setup(args.data, args.base_model)
    batch = 128 if kind == "sasrec" else 32
    fn = step_fn(task, kind, path, autocast_for(kind))
    before = reset_peak()  # model and data loaded; the steps' own memory (AdamW's states too) counts from here
    for indices in batches_for(task, path, batch)[:4]:
        fn(indices)
    print(json.dumps({"peak_rss_mib": peak_mib(), "before_mib": before}))


def run_child(args, kind: str, path: str) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, path, "--data", str(args.data), "--base-model", args.base_model,
           "--threads", str(args.threads), "--big-items", str(args.big_items)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def autocast_for(kind: str):
    """The LLM stages train under bf16 autocast where this CPU computes bf16 natively (`--mixed-precision auto`)."""
    from contextlib import nullcontext

    from slmrec_cli.train.accelerator import resolve_precision

    if kind != "sasrec" and resolve_precision("auto", auto_bf16=True) == "bf16":
        return lambda: torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="data/beauty")
    ap.add_argument("--base-model", default="smollm2-135m")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sasrec-steps", type=int, default=30)
    ap.add_argument("--llm-steps", type=int, default=6)
    ap.add_argument("--eval-users", type=int, default=512)
    ap.add_argument("--big-items", type=int, default=1_000_000)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    torch.set_num_threads(args.threads)
    from slmrec_cli.train.accelerator import cpu_bf16_supported

    data, sas = sasrec_setup(args.data)
    real = float((sas.windows[:, :-1] != 0).float().mean())
    report = {"data": str(args.data), "users": data.n_users, "items": data.n_items, "threads": args.threads,
              "cpu": platform.processor() or platform.machine(), "native_bf16": cpu_bf16_supported(),
              "torch": torch.__version__, "sasrec_real_slot_fraction": real}
    print(f"{data.name}: {data.n_users} users, {data.n_items} items; SASRec windows {100 * (1 - real):.0f}% padding")
    report["sasrec"] = time_paths(sas, "sasrec", 128, args.sasrec_steps, autocast_for("sasrec"))
    del sas
    _, llm = llm_setup(args.data, args.base_model)
    real = float((llm.windows[:, :-1] != 0).float().mean())
    report["llm_real_slot_fraction"] = real
    print(f"teacher windows {100 * (1 - real):.0f}% padding")
    report["teacher"] = time_paths(llm, "llm", 32, args.llm_steps, autocast_for("llm"))
    report["teacher_validation_s_per_1000_users"] = validation_cost(llm, args.eval_users, 32, autocast_for("llm"))
    del llm
    report["memory_mib"] = {kind: {p: run_child(args, kind, p) for p in paths_for(kind)} for kind in ("sasrec", "llm")}
    report["big_catalogue"] = {"items": args.big_items, "batch": "128 x 50", **run_child(args, "big", "trimmed"),
                               "padded_logits_gb": 128 * 50 * (args.big_items + 1) * 4 / 1e9}
    print(table(report))
    if args.out:
        args.out.write_text(json.dumps(report, indent=1) + "\n")


def table(r: dict) -> str:
    def ratio(a, b):
        return f"{a / b:.2f}"

    s, t, v, m = r["sasrec"], r["teacher"], r["teacher_validation_s_per_1000_users"], r["memory_mib"]
    mem = {k: {p: m[k][p]["peak_rss_mib"] - m[k][p]["before_mib"] for p in m[k]} for k in m}
    lines = ["| | padded (before) | trimmed | trimmed + grouped | packed (LLM default) | ratio trimmed | ratio grouped "
             "| ratio packed |", "|---|---:|---:|---:|---:|---:|---:|---:|"]

    def row(name: str, vals: dict, fmt: str) -> str:
        cells = [fmt.format(vals[p]) if p in vals else "" for p in PATHS]
        ratios = [ratio(vals[p], max(vals["padded"], 1e-9)) if p in vals else "" for p in PATHS[1:]]
        return f"| {name} | " + " | ".join(cells + ratios) + " |"

    timed = (("SASRec s/epoch", s, "s_per_epoch", "{:.1f}"), ("SASRec s/step", s, "s_per_step", "{:.3f}"),
             ("teacher s/step", t, "s_per_step", "{:.3f}"), ("teacher s/epoch", t, "s_per_epoch", "{:.0f}"))
    for name, d, key, fmt in timed:
        lines.append(row(name, {p: d[p][key] for p in d}, fmt))
    lines.append(row("teacher validation s/1000 users", v, "{:.1f}"))
    for k, name in (("sasrec", "SASRec"), ("llm", "teacher")):
        lines.append(row(f"{name} step memory above setup, MiB", mem[k], "{:.0f}"))
    b = r["big_catalogue"]
    lines.append(f"\nSASRec at {b['items']:,} items, one step of batch {b['batch']}: peak RSS "
                 f"{b['peak_rss_mib']:.0f} MiB ({b['step_s']:.1f} s); the padded path's logits alone would be "
                 f"{b['padded_logits_gb']:.1f} GB.")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
