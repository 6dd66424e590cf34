"""The paper's claims, checked against the given runs: each line states the comparison, the numbers and a verdict."""

from __future__ import annotations

from slmrec_cli.report.collect import Result, label, terms_label
from slmrec_cli.report.sections import (
    default_students,
    kd_students,
    main_student,
    mean_sd,
    no_kd,
    siblings,
    teacher_of,
)
from slmrec_cli.runs import RunKind


def _mrr(run: Result, protocol: str, split: str = "test") -> float | None:
    return run.metric("MRR", protocol, split)


def _compare(a: Result, b: Result, what: str) -> str:
    """'a ≥ b' on test MRR under both protocols."""
    parts, verdicts = [], []
    for protocol in ("sampled", "full"):
        x, y = _mrr(a, protocol), _mrr(b, protocol)
        if x is None or y is None:
            continue
        parts.append(f"{protocol} {100 * x:.2f} vs {100 * y:.2f}")
        verdicts.append(x >= y)
    if not verdicts:
        return ""
    verdict = "holds" if all(verdicts) else "does not hold" if not any(verdicts) else "holds under one protocol only"
    return f"- {what}: **{verdict}** — `{a.name}` vs `{b.name}`, test MRR % ({'; '.join(parts)})."


def sign_test(wins: int, n: int) -> float:
    """One-sided sign test: the chance of at least `wins` wins in n fair coin flips."""
    from math import comb

    return sum(comb(n, k) for k in range(wins, n + 1)) / 2**n


def seed_mean(run: Result, split: str) -> tuple[float, str, int] | None:
    """Mean sampled MRR over the run and its replicates (runs differing only by seed), its text, and the count."""
    xs = [m for r in (run, *run.replicates) if (m := r.metric("MRR", "sampled", split)) is not None]
    return (sum(xs) / len(xs), mean_sd([100 * x for x in xs]), len(xs)) if xs else None


def _compare_means(a: Result, b: Result, what: str, split: str, at_least: bool = False) -> str:
    """'a > b' (or a ≥ b) on the mean over seeds of each setting's sampled MRR on `split`."""
    x, y = seed_mean(a, split), seed_mean(b, split)
    if x is None or y is None:
        return ""
    verdict = "holds" if (x[0] >= y[0] if at_least else x[0] > y[0]) else "does not hold"
    seeds = [f"{n} seed{'s' if n > 1 else ''}" for n in (x[2], y[2])]
    return (f"- {what}, {split} MRR % (mean over seeds): **{verdict}** — `{a.name}` {x[1]} ({seeds[0]}) vs "
            f"`{b.name}` {y[1]} ({seeds[1]}).")


def by_seed(run: Result, protocol: str, split: str = "test") -> dict[int, float]:
    """MRR on `split` of the run and its replicates (runs differing only by seed), by seed."""
    return {r.seed: m for r in (run, *run.replicates) if (m := _mrr(r, protocol, split)) is not None}


def _compare_seeds(a: Result, b: Result, what: str, split: str = "test") -> str:
    """'a ≥ b' seed by seed (paired) on `split`, when both settings were run with at least two common seeds; a seed
    counts as a win when a ≥ b under every protocol both have."""
    parts, ahead, n = [], None, 0
    for protocol in ("sampled", "full"):
        x, y = by_seed(a, protocol, split), by_seed(b, protocol, split)
        common = sorted(set(x) & set(y))
        if len(common) < 2:
            continue
        diffs = dict(zip(common, (100 * (x[s] - y[s]) for s in common), strict=True))
        won = {s for s, d in diffs.items() if d >= 0}
        ahead, n = (won if ahead is None else ahead & won), max(n, len(common))
        each = ", ".join(f"seed {s} {d:+.2f}" for s, d in diffs.items())
        parts.append(f"{protocol}: ahead in {len(won)} of {len(common)} (sign test p = "
                     f"{sign_test(len(won), len(common)):.2f}), mean difference "
                     f"{mean_sd(list(diffs.values()), signed=True)} points ({each})")
    if ahead is None:
        return ""
    verdict = ("holds in every seed" if len(ahead) == n else "does not hold" if not ahead
               else f"holds in {len(ahead)} of {n} seeds")
    return f"- {what}, seed by seed: **{verdict}** — {split} MRR; {'; '.join(parts)}."


def pair_claims(student: Result, runs: list[Result], precondition: bool = True) -> list[str]:
    """Student vs its teacher (quality and cost), the paper's precondition (the teacher beats the student's depth
    trained alone) and student vs that same-depth model."""
    out = []
    teacher, base = teacher_of(student, runs), no_kd(student, runs)
    if teacher:
        what = f"{label(student)} is at least as good as its teacher {label(teacher)}"
        out.append(_compare(student, teacher, what))
        if student.replicates:  # the student's seeds (each distilled from this teacher) against the teacher's
            out.append(_compare_means(student, teacher, what, "test", at_least=True))
        s, t = student.efficiency, teacher.efficiency
        if s and t and s.get("device") != t.get("device"):  # e.g. one thread against two: no ratio to read
            out.append(f"- {label(student)} costs about half its teacher at inference: **not compared** — timed on "
                       f"{s.get('device')} and {t.get('device')} in their training processes; "
                       "`benchmarks/efficiency.py` times both in one process.")
        elif s and t:
            inf = s["inference_seconds"] / t["inference_seconds"]
            par = s["params"]["inference"] / t["params"]["inference"]
            verdict = "holds" if inf <= 0.6 else "does not hold"
            out.append(f"- {label(student)} costs about half its teacher at inference: **{verdict}** — inference "
                       f"time ×{inf:.2f}, inference parameters ×{par:.2f} (the id table and embeddings do not shrink "
                       "with depth; timed in separate processes).")
    if teacher and base and precondition:
        what = (f"Precondition: the teacher {label(teacher)} is stronger than the student's depth trained alone "
                f"({label(base)})")
        out += [_compare(teacher, base, what), _compare_means(teacher, base, what, "valid")]
    if base:
        what = f"Distillation beats the same depth trained without it ({label(base)})"
        out += [_compare(student, base, what), _compare_seeds(student, base, what),
                _compare_seeds(student, base, what, "valid")]  # 4 of 5 seeds is no proof alone: validation too
    return out


def other_pairs(main: Result | None, runs: list[Result]) -> list[Result]:
    """One default-setup student (offline, all three terms) for each other (teacher depth, student depth) pair."""
    seen = {(main.distill.teacher_layers, main.options.student_layers)} if main else set()
    out = []
    for r in default_students(runs):
        pair = (r.distill.teacher_layers, r.options.student_layers)
        if pair not in seen:
            seen.add(pair)
            out.append(r)
    return out


def claims(runs: list[Result]) -> str:
    out = []
    student = main_student(runs)
    if student:
        out += pair_claims(student, runs)
    teachers = {r.layers: r for r in runs if r.kind is RunKind.TEACHER and _mrr(r, "sampled") is not None}
    full = next((r for r in teachers.values() if r.full_depth), None)
    if full and 8 in teachers and full.layers != 8:
        ratio = _mrr(teachers[8], "sampled") / _mrr(full, "sampled")
        best = max(teachers.values(), key=lambda r: _mrr(r, "sampled"))
        verdict = "holds" if ratio >= 0.95 else "does not hold"
        out.append(f"- Depth is redundant (8 layers nearly as good as all {full.layers}): **{verdict}** — E4SRec-8 "
                   f"reaches {100 * ratio:.0f}% of E4SRec-{full.layers}'s sampled test MRR; the best depth among "
                   f"{sorted(teachers)} is {best.layers}.")
    if student and (base := no_kd(student, runs)):
        rows = siblings(student, runs, ("blocks", "mode", "norm_loss"))
        ref = _mrr(base, "sampled")
        deltas = [f"{terms_label(r.options)} {100 * (_mrr(r, 'sampled') - ref):+.2f}" for r in rows
                  if _mrr(r, "sampled") is not None]
        helped = [r for r in rows if (_mrr(r, "sampled") or 0) > ref]
        if len(rows) > 1:
            verdict = ("holds" if len(helped) == len(rows) else "does not hold" if not helped
                       else f"holds for {len(helped)} of {len(rows)} settings")
            out.append(f"- Each distillation setting beats CE only ({label(base)}, sampled test MRR "
                       f"{100 * ref:.2f} %): **{verdict}** — change in MRR points: {', '.join(deltas)}.")
    sasrec = next((r for r in runs if r.kind is RunKind.SASREC), None)
    if sasrec and student:  # the LLM models against the classic baseline they build on
        for r in (teacher_of(student, runs), no_kd(student, runs), student):
            if r is not None:
                out.append(_compare_means(r, sasrec, f"{label(r)} is at least as good as SASRec", "test",
                                          at_least=True))
    for other in other_pairs(student, runs):
        out += pair_claims(other, runs)
    for kd in kd_students(runs):  # beyond the paper: the same checks for students that also learned from L_kd
        out += pair_claims(kd, runs, precondition=False)
    out = [x for x in out if x]
    if not out:
        return "_Not enough runs to check the paper's claims (a teacher, its student and the no-KD model)._\n"
    return "\n".join(out) + "\n"
