"""fp32 against bf16 on this CPU, in ONE process: training step time and inference time of trained LLM runs, and
(from runs trained with each precision) validation MRR over seeds.

python benchmarks/precision.py time RUN... [--threads 2] [--steps 3] [--users 256] [--out precision.json]
python benchmarks/precision.py mrr RUN...
python benchmarks/precision.py eval RUN... [--threads 2] [--users 0] [--out eval_precision.json]

`time`: for each run (e.g. E4SRec-4 and E4SRec-8), a training step (forward + backward of the run's own loss on a
batch of 32 training examples, LoRA and projections trainable) and inference (scoring --users validation users under
the sampled protocol) in fp32, then under torch.autocast(cpu, bfloat16), as `--mixed-precision bf16` trains.
Prints whether this CPU computes bf16 natively (AVX-512 BF16 or AMX) and the bf16/fp32 ratios.
`mrr`: runs trained with `--mixed-precision no` and `bf16` (each with several --seed), grouped by depth and the
precision their config.json records: mean ± sd of the selected validation MRR, to compare with the seed spread.
`eval`: the same trained runs scored on validation (sampled and full protocol; --users 0 = every user) in fp32, as
slmrec evaluates, and under torch.autocast(cpu, bfloat16), as bf16 training computes: each metric both ways, the
paired MRR difference with its 95% interval, and how many users' ranks moved (docs/training.md, "Precision of
evaluation").
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch


def autocast(bf16: bool):
    return torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()


def scorer(model, bf16: bool):
    """model.score_all, under the bf16 autocast inside the scorer: rank_split turns autocast off around it."""
    def score_all(hist: torch.Tensor) -> torch.Tensor:
        with autocast(bf16):
            return model.score_all(hist)

    return score_all


def measure(run: Path, steps: int, users: int) -> dict:
    from slmrec_cli.data import load_dataset
    from slmrec_cli.evaluation.evaluate import rank_split
    from slmrec_cli.runs import Run
    from slmrec_cli.train.llm_task import LLMRecTask

    loaded = Run.load(run)
    model = loaded.load_model()
    data = load_dataset(loaded.data.path)
    for name, p in model.named_parameters():  # train LoRA + projections, as the trainers do
        p.requires_grad_("lora_" in name or name.startswith(("up.", "down.")))
    task = LLMRecTask(model, data, loaded.targets)
    rng = np.random.default_rng(0)
    batches = [task.batch(rng.choice(task.n_examples, size=min(32, task.n_examples), replace=False))
               for _ in range(steps + 1)]
    pick = np.arange(min(users, data.n_users))
    out = {"run": str(run), "layers": loaded.layers, "targets": loaded.targets}
    for bf16 in (False, True):
        model.train()
        times = []
        for i, b in enumerate(batches):
            t0 = time.perf_counter()
            with autocast(bf16):
                loss, _ = task.loss(model, b)
            loss.backward()
            model.zero_grad(set_to_none=True)
            if i:  # the first step is a warm-up
                times.append(time.perf_counter() - t0)
        model.eval()
        t0 = time.perf_counter()
        res = rank_split(scorer(model, bf16), data, "valid", ("sampled",), max_len=model.cfg.max_len, batch_size=64,
                         users=pick)
        key = "bf16" if bf16 else "fp32"
        out[key] = {"train_step_seconds": float(np.median(times)), "inference_seconds": time.perf_counter() - t0,
                    "inference_users": len(pick), "valid_MRR_subset": res["sampled"].metrics["MRR"]}
    out["bf16_over_fp32"] = {k: out["bf16"][k] / out["fp32"][k] for k in ("train_step_seconds", "inference_seconds")}
    return out


def time_cmd(args) -> None:
    from slmrec_cli.train.accelerator import cpu_bf16_supported

    torch.set_num_threads(args.threads)
    native = cpu_bf16_supported()
    print(f"CPU: {torch.backends.cpu.get_cpu_capability()}, native bf16 (AVX-512 BF16 or AMX): {native}, "
          f"{args.threads} threads")
    rows = [measure(Path(r), args.steps, args.users) for r in args.runs]
    print("| run | layers | fp32 step s | bf16 step s | ratio | fp32 inference s | bf16 inference s | ratio | "
          "MRR fp32 / bf16 (subset) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        f, b, q = r["fp32"], r["bf16"], r["bf16_over_fp32"]
        print(f"| {Path(r['run']).name} | {r['layers']} | {f['train_step_seconds']:.3f} | "
              f"{b['train_step_seconds']:.3f} | "
              f"{q['train_step_seconds']:.2f} | {f['inference_seconds']:.2f} | {b['inference_seconds']:.2f} | "
              f"{q['inference_seconds']:.2f} | {f['valid_MRR_subset']:.4f} / {b['valid_MRR_subset']:.4f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"native_bf16": native, "threads": args.threads, "runs": rows}, indent=1))


def mrr_cmd(args) -> None:
    from slmrec_cli.runs import Run

    groups: dict[tuple[int, str], list[float]] = {}
    for r in args.runs:
        run = Run.load(r)
        rec = json.loads((Path(r) / "eval" / "valid-sampled.json").read_text())
        groups.setdefault((run.layers, run.precision), []).append(rec["metrics"]["MRR"])
    print("| layers | precision | seeds | valid MRR % mean ± sd |")
    print("|---:|---|---:|---|")
    for (layers, prec), v in sorted(groups.items()):
        sd = statistics.stdev(v) if len(v) > 1 else float("nan")
        print(f"| {layers} | {prec} | {len(v)} | {100 * statistics.mean(v):.2f} ± {100 * sd:.2f} |")


def eval_one(run: Path, users: int) -> dict:
    from slmrec_cli.data import load_dataset
    from slmrec_cli.evaluation.evaluate import PROTOCOLS, rank_split
    from slmrec_cli.runs import load_model

    cfg, model = load_model(run)
    data = load_dataset(cfg["data"]["path"])
    pick = np.arange(data.n_users if users <= 0 else min(users, data.n_users))
    out = {"run": str(run), "kind": cfg["kind"], "trained_in": cfg.get("precision", "fp32"), "users": len(pick)}
    ranks = {}
    for name, bf16 in (("fp32", False), ("bf16", True)):
        t0 = time.perf_counter()
        res = rank_split(scorer(model, bf16), data, "valid", PROTOCOLS, max_len=model.cfg.max_len, batch_size=64,
                         users=pick)
        out[name] = {p: r.metrics for p, r in res.items()} | {"seconds": time.perf_counter() - t0}
        ranks[name] = {p: r.ranks for p, r in res.items()}
    for p in PROTOCOLS:
        a, b = ranks["fp32"][p], ranks["bf16"][p]
        d = 1 / (b + 1) - 1 / (a + 1)  # each user's reciprocal rank, bf16 − fp32
        out[f"{p}_diff"] = {"MRR": float(d.mean()), "ci95": float(1.96 * d.std(ddof=1) / np.sqrt(len(d))),
                            "users_moved": int((a != b).sum()), "max_rank_move": int(np.abs(a - b).max())}
    return out


def eval_cmd(args) -> None:
    torch.set_num_threads(args.threads)
    rows = [eval_one(Path(r), args.users) for r in args.runs]
    print(f"validation, {args.threads} threads; MRR and NDCG@10 in %; bf16 = torch.autocast(cpu, bfloat16)")
    print("| run | protocol | users | MRR fp32 | MRR bf16 | bf16 − fp32 (95% CI) | NDCG@10 fp32 / bf16 | "
          "users whose rank moved | seconds fp32 / bf16 |")
    print("|---|---|---:|---:|---:|---|---|---:|---|")
    for r in rows:
        for p in ("sampled", "full"):
            f, b, d = r["fp32"][p], r["bf16"][p], r[f"{p}_diff"]
            print(f"| {Path(r['run']).name} | {p} | {r['users']} | {100 * f['MRR']:.2f} | {100 * b['MRR']:.2f} | "
                  f"{100 * d['MRR']:+.3f} (± {100 * d['ci95']:.3f}) | {100 * f['NDCG@10']:.2f} / "
                  f"{100 * b['NDCG@10']:.2f} | {d['users_moved']} | {r['fp32']['seconds']:.1f} / "
                  f"{r['bf16']['seconds']:.1f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"threads": args.threads, "runs": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("time", help="fp32 vs bf16 step and inference time, one process")
    t.add_argument("runs", nargs="+")
    t.add_argument("--threads", type=int, default=2)
    t.add_argument("--steps", type=int, default=3)
    t.add_argument("--users", type=int, default=256)
    t.add_argument("--out")
    m = sub.add_parser("mrr", help="validation MRR by depth and recorded precision")
    m.add_argument("runs", nargs="+")
    e = sub.add_parser("eval", help="validation metrics scored in fp32 and under bf16 autocast")
    e.add_argument("runs", nargs="+")
    e.add_argument("--threads", type=int, default=2)
    e.add_argument("--users", type=int, default=0, help="the first N users (0 = every user)")
    e.add_argument("--out")
    args = ap.parse_args()
    {"time": time_cmd, "mrr": mrr_cmd, "eval": eval_cmd}[args.cmd](args)


if __name__ == "__main__":
    main()
