"""Efficiency of several runs measured in ONE process under the same conditions (paper Table 5 style).

python benchmarks/efficiency.py RUN... [--threads 2] [--steps 5] [--out eff.json]

For each run: inference = wall time to score every test user under the sampled protocol (model loaded, warm);
train step = forward + backward of the run's next-item CE on a batch of 32 training examples (LoRA and projections
trainable, as in training). Ratios are against the first run given. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def measure(run: Path, steps: int, batch: int) -> dict:
    from slmrec_cli.data import load_dataset
    from slmrec_cli.evaluation.evaluate import rank_split
    from slmrec_cli.runs import Run, RunKind

    loaded = Run.load(run)
    model = loaded.load_model()
    data = load_dataset(loaded.data.path)
    eval_batch = 64
    rank_split(model.score_all, data, "test", ("sampled",), max_len=model.cfg.max_len, batch_size=eval_batch,
               users=np.arange(min(64, data.n_users)))  # warm-up
    t0 = time.perf_counter()
    rank_split(model.score_all, data, "test", ("sampled",), max_len=model.cfg.max_len, batch_size=eval_batch)
    inference = time.perf_counter() - t0
    if loaded.kind is RunKind.SASREC:
        from slmrec_cli.stages.pretrain_ids import SASRecTask

        task = SASRecTask(model, data, model.cfg.max_len)
    else:
        from slmrec_cli.train.llm_task import LLMRecTask

        for name, p in model.named_parameters():  # train LoRA + projections, as the trainers do
            p.requires_grad_("lora_" in name or name.startswith(("up.", "down.")))
        task = LLMRecTask(model, data, loaded.targets)
    model.train()
    rng = np.random.default_rng(0)
    times = []
    for i in range(steps + 1):
        b = task.batch(rng.choice(task.n_examples, size=min(batch, task.n_examples), replace=False))
        t0 = time.perf_counter()
        loss, _ = task.loss(model, b)
        loss.backward()
        model.zero_grad(set_to_none=True)
        if i:  # the first step is a warm-up
            times.append(time.perf_counter() - t0)
    total = sum(p.numel() for p in model.parameters())
    eff = json.loads((run / "efficiency.json").read_text())
    return {"run": str(run), "kind": loaded.kind.value, "layers": loaded.layers,
            "inference_seconds": inference, "users": data.n_users, "train_step_seconds": float(np.median(times)),
            "params_trainable": eff["params"]["trainable"], "params_inference": eff["params"]["inference"],
            "params_total": total}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    rows = [measure(r, a.steps, a.batch) for r in a.runs]
    ref = rows[0]
    from slmrec_cli.devices import device_name

    result = {"device": device_name("cpu"), "threads": a.threads, "batch": a.batch, "rows": rows}
    if a.out:
        a.out.write_text(json.dumps(result, indent=2))
    print(f"Measured in one process on {result['device']}; ratios against `{Path(ref['run']).name}`.\n")
    print("| run | layers | trainable params | inference params | train step s (batch "
          f"{a.batch}) | inference s ({ref['users']} users) | train × | inference × | inference params × |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| `{Path(r['run']).name}` | {r['layers']} | {r['params_trainable']:,} | {r['params_inference']:,} | "
              f"{r['train_step_seconds']:.2f} | {r['inference_seconds']:.1f} | "
              f"{r['train_step_seconds'] / ref['train_step_seconds']:.2f} | "
              f"{r['inference_seconds'] / ref['inference_seconds']:.2f} | "
              f"{r['params_inference'] / ref['params_inference']:.2f} |")


if __name__ == "__main__":
    main()
