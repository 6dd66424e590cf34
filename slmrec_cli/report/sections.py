"""Markdown sections of `slmrec report`, one function per table or figure of the paper. Numbers come only from the
runs' own files (eval/*.json, efficiency.json, probe/test.json) and the dataset's meta.json."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from slmrec_cli.distill.terms import PAPER_TERMS
from slmrec_cli.evaluation.ranking import METRIC_NAMES
from slmrec_cli.plots import metric_panels
from slmrec_cli.report.collect import ALL_TERMS, DEFAULTS, Result, kd_label, label, terms_label
from slmrec_cli.runs import RunKind

PAPER_WEIGHTS = tuple(t.weight for t in PAPER_TERMS)
ABLATION_ORDER = ("CE only", "+ d_cos", "+ d_cos, d_norm", "+ d_cos, l_ms", ALL_TERMS)
MISSING = "_No runs for this in the report's arguments (`benchmarks/paper_study.sh` makes them)._\n"


def pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.2f}"


def mean_sd(xs: list[float], signed: bool = False) -> str:
    """'mean ± sample sd' of values already in the unit to print."""
    import statistics

    mean = f"{statistics.mean(xs):+.2f}" if signed else f"{statistics.mean(xs):.2f}"
    return f"{mean} ± {statistics.stdev(xs):.2f}" if len(xs) > 1 else mean


def metrics_table(rows: list[tuple[str, dict]], first: str = "model", bold_best: bool = True) -> list[str]:
    """rows: (name cell, metrics dict); metrics in %, the best of each column in bold."""
    out = [f"| {first} | " + " | ".join(METRIC_NAMES) + " |", "|---|" + "---:|" * len(METRIC_NAMES)]
    best = {m: max(r[m] for _, r in rows) for m in METRIC_NAMES} if rows else {}
    for name, r in rows:
        cells = [f"**{pct(r[m])}**" if bold_best and len(rows) > 1 and r[m] == best[m] else pct(r[m])
                 for m in METRIC_NAMES]
        out.append(f"| {name} | " + " | ".join(cells) + " |")
    return out


def protocol_line(rec: dict) -> str:
    return (f"test split, **{rec['protocol']}** protocol: {rec['candidates']} candidates, "
            f"mask_history={str(rec['mask_history']).lower()}, {rec['users']} users, dataset {rec['dataset']} "
            f"`{rec['data_hash']}`, pessimistic ties (docs/protocol.md); metrics in %.")


def header(runs: list[Result]) -> str:
    bases = sorted({r.base for r in runs if r.kind.llm})
    devices = sorted({r.efficiency["device"] for r in runs if r.efficiency})
    d = runs[0].data
    return (f"Dataset **{d.name}** `{d.hash}` · base model {', '.join(bases) or '—'} · device "
            f"{', '.join(devices) or '—'} · runs: {', '.join(f'`{r.name}`' for r in runs)}\n")


def datasets(meta: dict | None) -> str:
    if meta is None:
        return "_The dataset directory was not found; pass `--data DIR` to add its statistics._\n"
    st, op = meta["stats"], meta["options"]
    rating = ("no ratings (every row kept)" if st.get("implicit") else "every rating" if op.get("min_rating") is None
              else f"rating > {op['min_rating']:g}")
    return "\n".join([
        "| dataset | users | items | interactions | density | avg length | content hash | filters |",
        "|---|---:|---:|---:|---:|---:|---|---|",
        f"| {meta['name']} | {st['users']:,} | {st['items']:,} | {st['interactions']:,} | {100 * st['density']:.2f}% "
        f"| {st['mean_length']:.1f} | `{meta['content_hash']}` | {rating}, {op['k_core']}-core, "
        f"{op['num_negatives']} fixed negatives (seed {op['seed']}) |"]) + "\n"


def quality(runs: list[Result], popularity: dict[str, dict]) -> str:
    out = []
    for protocol in ("sampled", "full"):
        rows = [(f"{label(r)} `{r.name}`", r.evals[("test", protocol)]) for r in runs if ("test", protocol) in r.evals]
        if protocol in popularity:
            rows.insert(0, ("most popular", popularity[protocol]))
        if not rows:
            continue
        out += [protocol_line(rows[0][1]), "", *metrics_table([(n, rec["metrics"]) for n, rec in rows]), ""]
    return "\n".join(out) if out else MISSING


def default_students(runs: list[Result]) -> list[Result]:
    """Offline students with the paper's loss (all three terms, no L_kd), B=4 first, then the most blocks."""
    return sorted((r for r in runs if r.kind is RunKind.STUDENT and r.options.mode == "offline"
                   and terms_label(r.options) == ALL_TERMS and not kd_label(r.options)),
                  key=lambda r: (r.options.align != DEFAULTS.align, r.options.blocks != DEFAULTS.blocks,
                                 -r.options.blocks))


def main_student(runs: list[Result]) -> Result | None:
    """The default-setup student (all three terms, offline, B=4 or else the most blocks), else any offline one."""
    students = sorted((r for r in runs if r.kind is RunKind.STUDENT and r.options.mode == "offline"),
                      key=lambda r: bool(kd_label(r.options)))
    return (default_students(runs) or students or [None])[0]


def kd_students(runs: list[Result]) -> list[Result]:
    """Students trained with L_kd, added to the paper's loss or alone (one row per setting; seeds are replicates)."""
    return [r for r in runs if r.kind is RunKind.STUDENT and kd_label(r.options)]


def teacher_of(student: Result, runs: list[Result]) -> Result | None:
    name = student.distill.teacher.name
    return next((r for r in runs if r.kind is RunKind.TEACHER and r.name == name
                 and r.layers == student.distill.teacher_layers), None)


def no_kd(student: Result, runs: list[Result]) -> Result | None:
    """The same-depth model trained without distillation (a teacher run with the student's depth)."""
    return next((r for r in runs if r.kind is RunKind.TEACHER and r.layers == student.options.student_layers
                 and r.base == student.base), None)


def siblings(main: Result, runs: list[Result], same: tuple[str, ...]) -> list[Result]:
    """Students of main's (teacher, student) depths that share the options `same` with it, its use of L_kd and its
    --align."""
    keys = ("student_layers", "align", *same)
    return [r for r in runs if r.kind is RunKind.STUDENT and r.distill.teacher_layers == main.distill.teacher_layers
            and all(getattr(r.options, k) == getattr(main.options, k) for k in keys)
            and kd_label(r.options) == kd_label(main.options)]


def ablation(runs: list[Result]) -> str:
    main = main_student(runs)
    if main is None:
        return MISSING
    rows: dict[str, tuple[str, Result]] = {}
    base = no_kd(main, runs)
    if base is not None:
        rows["CE only"] = (f"CE only: {label(base)}, no distillation `{base.name}`", base)
    for r in siblings(main, runs, ("blocks", "mode", "norm_loss")):
        rows.setdefault(terms_label(r.options), (f"{terms_label(r.options)} `{r.name}`", r))
    if len(rows) < 2:
        return MISSING
    ordered = [rows[k] for k in (*ABLATION_ORDER, *sorted(set(rows) - set(ABLATION_ORDER))) if k in rows]
    rec = ordered[0][1].evals[("test", "sampled")]
    lines = [f"SLMRec {main.options.student_layers}←{main.distill.teacher_layers}, B={main.options.blocks}, "
             f"{main.options.mode}, norm loss {main.options.norm_loss}; λ as set per run. " + protocol_line(rec),
             "", *metrics_table([(n, r.evals[("test", "sampled")]["metrics"]) for n, r in ordered], "terms"), ""]
    return "\n".join(lines)


def efficiency(runs: list[Result]) -> str:
    rows = [r for r in runs if r.efficiency]
    if not rows:
        return MISSING
    main = main_student(runs)
    ref = (teacher_of(main, runs) if main else None) or max((r for r in rows if r.kind is RunKind.TEACHER),
                                                            key=lambda r: r.layers, default=rows[0])
    e0 = ref.efficiency
    out = [f"Ratios are against `{ref.name}` ({label(ref)}); below 1 means cheaper. Train time per epoch counts "
           "training steps only; inference time is scoring the test split (both protocols in one pass). Runs were "
           "timed one after another in their own processes, so a busy machine shows up in the ratios.", "",
           "| model | run | trainable params | inference params | train s/epoch | inference s | users | peak GiB "
           "| device | train × | inference × | params × |", "|---|---|" + "---:|" * 6 + "---|---:|---:|---:|"]
    for r in rows:
        e = r.efficiency
        out.append(f"| {label(r)} | `{r.name}` | {e['params']['trainable']:,} | {e['params']['inference']:,} | "
                   f"{e['train_seconds_per_epoch']:.1f} | {e['inference_seconds']:.1f} | {e['inference_users']} | "
                   f"{e['peak_memory_bytes'] / 2**30:.2f} | {e['device']} | "
                   f"{e['train_seconds_per_epoch'] / e0['train_seconds_per_epoch']:.2f} | "
                   f"{e['inference_seconds'] / e0['inference_seconds']:.2f} | "
                   f"{e['params']['inference'] / e0['params']['inference']:.2f} |")
    return "\n".join(out) + "\n"


def sasrec_metrics(sasrec: Result | None) -> dict | None:
    """SASRec's test metrics (sampled protocol), drawn as the baseline of the probe and depth plots."""
    rec = sasrec.metrics_record("sampled") if sasrec else None
    return rec["metrics"] if rec else None


def baseline_row(name: str, metrics: dict) -> str:
    return f"| {name} | " + " | ".join(pct(metrics[m]) for m in METRIC_NAMES) + " |"


Image = Callable[[str], tuple[Path, str]]  # slug → (file to write, link for the Markdown)


def probes(runs: list[Result], sasrec: Result | None, image: Image) -> str:
    out = []
    base = sasrec_metrics(sasrec)
    for r in (r for r in runs if r.probe):
        p = r.probe
        file, link = image(f"probe-{r.name}")
        metric_panels([x["layer"] for x in p["layers"]], {"probe": [x["metrics"] for x in p["layers"]]}, file,
                      xlabel="layer", baseline=base, baseline_name="SASRec",
                      title=f"per-layer probe of {label(r)} ({p['dataset']}, test, sampled)")
        out += [f"**{label(r)}** `{r.name}` ({p['base_model']}): last-token state after each layer → final norm "
                f"{'on' if p['final_norm'] else 'off'} → the run's down-projection; test split, sampled protocol, "
                f"{p['candidates']} candidates, `{p['data_hash']}`; metrics in %.", "", f"![probe {r.name}]({link})",
                "", *metrics_table([(str(x["layer"]), x["metrics"]) for x in p["layers"]], "layer")]
        if base:
            out.append(baseline_row("SASRec", base))
        out.append("")
    return "\n".join(out) if out else MISSING


def depth_sweep(runs: list[Result], sasrec: Result | None, image: Image) -> str:
    by_depth: dict[int, Result] = {}
    for r in runs:
        if r.kind is RunKind.TEACHER and ("test", "sampled") in r.evals:
            by_depth.setdefault(r.layers, r)
    if len(by_depth) < 2:
        return MISSING
    xs = sorted(by_depth)
    rows = [by_depth[x].evals[("test", "sampled")] for x in xs]
    base = sasrec_metrics(sasrec)
    file, link = image("depth-sweep")
    metric_panels(xs, {"first l layers, LoRA": [r["metrics"] for r in rows]}, file, xlabel="layers", log2=True,
                  baseline=base, baseline_name="SASRec", title=f"depth sweep ({rows[0]['dataset']}, test, sampled)")
    table = metrics_table([(f"{x} `{by_depth[x].name}`", r["metrics"]) for x, r in zip(xs, rows, strict=True)],
                          "layers")
    if base:
        table.append(baseline_row("SASRec", base))
    return "\n".join([f"Teachers cut to their first l layers of {by_depth[xs[0]].base}, same training settings. "
                      + protocol_line(rows[0]), "", f"![depth sweep]({link})", "", *table, ""])


def blocks(runs: list[Result], image: Image) -> str:
    main = main_student(runs)
    if main is None:
        return MISSING
    by_b: dict[int, Result] = {}
    for r in siblings(main, runs, ("mode", "norm_loss", *PAPER_WEIGHTS)):
        by_b.setdefault(r.options.blocks, r)
    if len(by_b) < 2:
        return MISSING
    xs = sorted(by_b)
    rows = [by_b[b].evals[("test", "sampled")] for b in xs]
    file, link = image("blocks")
    metric_panels(xs, {label(main).split(" (")[0]: [r["metrics"] for r in rows]}, file, xlabel="blocks B",
                  title=f"block count ({rows[0]['dataset']}, test, sampled)")
    return "\n".join([f"{label(main)} with B blocks (B = 1 has no intermediate block, so no l_ms). "
                      + protocol_line(rows[0]), "", f"![block count]({link})", "",
                      *metrics_table([(f"{b} `{by_b[b].name}`", r["metrics"]) for b, r in zip(xs, rows, strict=True)],
                                     "B"), ""])


def online(runs: list[Result]) -> str:
    main = main_student(runs)
    if main is None:
        return MISSING
    pair = {r.options.mode: r for r in siblings(main, runs, ("blocks", "norm_loss", *PAPER_WEIGHTS))}
    if len(pair) < 2:
        return MISSING
    rows = [(f"{mode}: {label(r)} `{r.name}`", r.evals[("test", "sampled")]) for mode, r in sorted(pair.items())]
    return "\n".join(["Offline: the student learns from the trained, frozen teacher. Online: teacher and student start "
                      "from the base model together, each with its own CE (only the student is evaluated). "
                      + protocol_line(rows[0][1]), "", *metrics_table([(n, r["metrics"]) for n, r in rows], "mode"),
                      ""])


def seeds(runs: list[Result]) -> str:
    """Settings run with several seeds (runs that differ only by --seed): the spread a single run hides."""
    rows = [r for r in runs if r.replicates]
    if not rows:
        return ("_One seed per setting. Runs that differ only by `--seed` are folded into one row and summarised "
                "here (the tables above show the first given)._\n")
    out = ["Runs that differ only by `--seed` are one row in the tables above (the first given); here is their spread. "
           "MRR % under the sampled protocol, mean ± sample standard deviation over seeds (docs/protocol.md).", "",
           "| model | runs | seeds | test MRR | test min–max | valid MRR |", "|---|---|---|---:|---:|---:|"]
    for r in rows:
        group = [r, *r.replicates]
        test = [100 * m for g in group if (m := g.metric("MRR")) is not None]
        valid = [100 * m for g in group if (m := g.metric("MRR", split="valid")) is not None]
        out.append(f"| {label(r)} | {', '.join(f'`{g.name}`' for g in group)} | "
                   f"{', '.join(str(g.seed) for g in group)} | {mean_sd(test)} | {min(test):.2f}–{max(test):.2f} | "
                   f"{mean_sd(valid) if valid else '—'} |")
    return "\n".join(out) + "\n"
