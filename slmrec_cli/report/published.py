"""Published numbers beside ours: JSON files of results from papers and benchmark repositories (format:
docs/published/README.md), printed by `slmrec report` only where the protocol matches ours; otherwise each entry is
listed as not comparable, with why (PROTOCOL.md, "Public benchmark files and published numbers")."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from pathlib import Path

from slmrec_cli.errors import SlmrecError
from slmrec_cli.evaluation.ranking import METRIC_NAMES
from slmrec_cli.report.collect import Result, label
from slmrec_cli.report.sections import main_student, pct
from slmrec_cli.runs import RunKind

HOME = Path(__file__).parent / "published"  # shipped with the package (pyproject: package-data)
FORMAT = "slmrec-published"
STATS = ("users", "items", "interactions")
SHOWN = ("MRR", "HR@10", "NDCG@10")
SAMPLING = "uniform-unseen"  # ours: negatives uniform over the items the user never interacted with
TIES = ("Published tables usually break ties by sort order (a tied positive may rank ahead of the items it ties "
        "with), ours pessimistically (every tie counts against the model, docs/protocol.md): the difference can only "
        "favour them.")


@dataclass
class Entry:
    """One published row: a model's test metrics (fractions) under one protocol."""

    model: str
    source: str
    split: str
    protocol: str  # sampled | full
    metrics: dict[str, float]
    ties: str = "unknown"  # sort order | pessimistic | unknown
    negatives: int | None = None  # sampled: negatives per user
    sampling: str | None = None  # sampled: how they were drawn (uniform-unseen is ours)
    mask_history: bool | None = None  # full: the user's history removed from the ranking; None = unknown
    users: int | None = None  # users the published mean is over
    note: str = ""
    caveats: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        return f"{self.model} ({self.protocol}" + (f", {self.negatives} negatives)" if self.negatives else ")")


@dataclass
class Published:
    """One file: a dataset (named, with its statistics) and the published entries on it."""

    shown: str  # the path as the report prints it
    name: str
    source: str
    stats: dict[str, int]
    content_hash: str | None
    entries: list[Entry]


def _check(ok: bool, where: str, what: str) -> None:
    if not ok:
        raise SlmrecError(f"published file {where}: {what} (format: docs/published/README.md)")


def _entry(d: object, where: str) -> Entry:
    _check(isinstance(d, dict), where, "is not an object")
    for key in ("model", "source", "split", "protocol"):
        _check(isinstance(d.get(key), str) and d[key].strip() != "", where, f"needs a text '{key}'")
    _check(d["protocol"] in ("sampled", "full"), where, f"protocol is '{d['protocol']}', not sampled or full")
    metrics = d.get("metrics")
    _check(isinstance(metrics, dict) and metrics != {}, where, "needs 'metrics' (name: fraction)")
    for m, v in metrics.items():
        _check(m in METRIC_NAMES, where, f"unknown metric '{m}' (known: {', '.join(METRIC_NAMES)})")
        _check(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1, where,
               f"{m} = {v!r} is not a fraction in [0, 1]; store 28.52% as 0.2852")
    known = {"model", "source", "split", "protocol", "metrics", "ties", "negatives", "sampling", "mask_history",
             "users", "note", "caveats"}
    unknown = sorted(set(d) - known)
    _check(not unknown, where, f"unknown key(s) {', '.join(unknown)}")
    if d["protocol"] == "sampled":
        n = d.get("negatives")
        _check(isinstance(n, int) and not isinstance(n, bool) and n >= 1, where, "sampled needs 'negatives' ≥ 1")
        _check(isinstance(d.get("sampling"), str), where, f"sampled needs 'sampling' ('{SAMPLING}' or another rule)")
    else:
        _check(d.get("mask_history") is True or d.get("mask_history") is False or d.get("mask_history") == "unknown",
               where,
               "full needs 'mask_history': true, false or \"unknown\"")
    users = d.get("users")
    _check(users is None or (isinstance(users, int) and users > 0), where, "'users' must be a whole number")
    caveats = d.get("caveats", [])
    _check(isinstance(caveats, list) and all(isinstance(c, str) for c in caveats), where, "'caveats' is a list of text")
    return Entry(d["model"], d["source"], d["split"], d["protocol"], {m: float(v) for m, v in metrics.items()},
                 str(d.get("ties", "unknown")), d.get("negatives"), d.get("sampling"),
                 d.get("mask_history") if isinstance(d.get("mask_history"), bool) else None, users,
                 str(d.get("note", "")), tuple(caveats))


def load_published(path: Path, shown: str | None = None) -> Published:
    """One published file, checked: any fault is one line naming the file (and the entry)."""
    path, shown = Path(path), shown or str(path)
    if not path.is_file():
        raise SlmrecError(f"published file {shown} does not exist; give a JSON file (docs/published/README.md)")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SlmrecError(f"published file {shown} is not valid JSON ({e}); fix its syntax") from None
    _check(isinstance(d, dict) and d.get("format") == FORMAT, shown, f"needs \"format\": \"{FORMAT}\"")
    _check(d.get("format_version") == 1, shown, f"format_version {d.get('format_version')!r}; this slmrec reads 1")
    ds = d.get("dataset")
    _check(isinstance(ds, dict) and isinstance(ds.get("name"), str), shown, "needs 'dataset' with a 'name'")
    stats = ds.get("stats")
    _check(isinstance(stats, dict) and all(isinstance(stats.get(k), int) for k in STATS), shown,
           f"dataset needs 'stats' with whole numbers {', '.join(STATS)}")
    _check(ds.get("content_hash") is None or isinstance(ds["content_hash"], str), shown,
           "dataset 'content_hash' is the text slmrec prepare prints (or leave it out)")
    entries = d.get("entries")
    _check(isinstance(entries, list) and entries != [], shown, "needs a non-empty list 'entries'")
    return Published(shown, ds["name"], str(ds.get("source", "")), {k: stats[k] for k in STATS},
                     ds.get("content_hash"), [_entry(e, f"{shown}, entry {i + 1}") for i, e in enumerate(entries)])


def published_files(extra: list[Path] = ()) -> list[Published]:
    """The package's published files (slmrec_cli/report/published/*.json), then the user's --published files."""
    home = [load_published(p, f"slmrec_cli/report/published/{p.name}") for p in sorted(HOME.glob("*.json"))]
    return home + [load_published(p) for p in extra]


def _stats_text(stats: dict) -> str:
    return " · ".join(f"{stats[k]:,} {k}" for k in STATS if k in stats)


def our_stats(runs: list[Result], meta: dict | None) -> tuple[dict[str, int], str]:
    """The dataset's statistics from its meta.json, else what the runs' own records say (users, items)."""
    if meta is not None:
        return {k: meta["stats"][k] for k in STATS}, "meta.json"
    rec = next(rec for r in runs for rec in r.evals.values())
    return ({"users": rec["users"], "items": runs[0].run.model.n_items},
            "the runs' records; interactions not checked: pass --data for meta.json")


def other_dataset(pub: Published, runs: list[Result], ours: dict[str, int]) -> str | None:
    """Why the published file is about another dataset, or None when it is this one."""
    if pub.content_hash and pub.content_hash != runs[0].data.hash:
        return f"another content hash (`{pub.content_hash}`, this one `{runs[0].data.hash}`)"
    if any(pub.stats[k] != ours[k] for k in ours):
        return f"another dataset ({_stats_text(pub.stats)}; this one {_stats_text(ours)})"
    return None


def why_not(e: Entry, rec: dict | None) -> str | None:
    """Why entry e is not comparable with our test record `rec` of its protocol, or None when it is."""
    if e.split != "test":
        return f"published on the {e.split} split; ours are on the test split"
    if rec is None:
        return f"none of these runs was scored under the {e.protocol} protocol"
    if e.protocol == "sampled":
        if e.sampling != SAMPLING:
            return f"negatives drawn '{e.sampling}'; ours uniformly from the items a user never interacted with"
        ours = rec["candidates"] - 1
        if e.negatives != ours:
            return (f"{e.negatives} negatives per user, ours {ours} (prepare with `--num-negatives {e.negatives}` "
                    "to compare)")
        return None
    if e.mask_history is None:
        return "its history masking is unknown"
    if e.mask_history != rec["mask_history"]:
        return (f"mask_history {str(e.mask_history).lower()}, ours {str(rec['mask_history']).lower()} "
                f"(`slmrec evaluate --{'' if e.mask_history else 'no-'}mask-history`)")
    return None


def seed_mean(run: Result, metric: str, protocol: str) -> tuple[float, int] | None:
    """Test `metric` under `protocol`, mean over the run and its replicates (runs differing only by seed)."""
    xs = [m for r in (run, *run.replicates) if (m := r.metric(metric, protocol)) is not None]
    return (statistics.mean(xs), len(xs)) if xs else None


def our_rows(runs: list[Result], protocol: str) -> list[Result]:
    """SASRec, the main student and the best LLM model (by mean test MRR), each scored under `protocol`."""
    scored = [r for r in runs if ("test", protocol) in r.evals]
    best = max((r for r in scored if r.kind.llm), key=lambda r: seed_mean(r, "MRR", protocol)[0],
               default=None)
    student = main_student(runs)
    picked = [r for r in scored if r.kind is RunKind.SASREC] + [r for r in (student, best) if r is not None]
    out: list[Result] = []
    for r in picked:
        if any(r is s for s in scored) and not any(r is o for o in out):
            out.append(r)
    return out


def _pair_row(run: Result, e: Entry, protocol: str) -> str:
    cells = []
    for m in SHOWN:
        ours, theirs = seed_mean(run, m, protocol), e.metrics.get(m)
        cells.append(f"{pct(ours[0])} / {pct(theirs)}")
        cells.append(f"{ours[0] / theirs:.2f}" if theirs else "—")
    seeds = seed_mean(run, "MRR", protocol)[1]
    return f"| {label(run)} `{run.name}` | {seeds} | {e.model} | " + " | ".join(cells) + " |"


def _file_section(pub: Published, runs: list[Result], ours: dict[str, int], where: str) -> list[str]:
    out = [f"**{pub.name}** (`{pub.shown}`): matches this dataset's statistics, {_stats_text(pub.stats)} (ours from "
           f"{where}).", ""]
    comparable: dict[str, list[tuple[Entry, list[Result]]]] = {}
    refused = []
    for e in pub.entries:
        # each of our rows on its own record: a run evaluated again with other options has its own masking
        picked = our_rows(runs, e.protocol)
        reasons = [why_not(e, r.evals[("test", e.protocol)]) for r in picked] or [why_not(e, None)]
        rows = [r for r, why in zip(picked, reasons, strict=False) if why is None]
        if rows:
            comparable.setdefault(e.protocol, []).append((e, rows))
        else:
            refused.append(f"- {e.title}: **not comparable** — {reasons[0]}.")
    for protocol, pairs in comparable.items():
        rec = pairs[0][1][0].evals[("test", protocol)]
        what = (f"{rec['candidates'] - 1} negatives per user, uniform over never-seen items" if protocol == "sampled"
                else f"mask_history={str(rec['mask_history']).lower()}")
        out += [f"Test split, **{protocol}** protocol ({what}); ours / published in %, × = ours ÷ published; ours is "
                "the mean over a row's seeds.", "",
                "| ours | seeds | published | " + " | ".join(f"{m} % | ×" for m in SHOWN) + " |",
                "|---|---:|---|" + "---:|---:|" * len(SHOWN)]
        out += [_pair_row(run, e, protocol) for e, rows in pairs for run in rows]
        out.append("")
    if refused:
        out += ["Not comparable here:", *refused, ""]
    out.append("Sources:")
    for e in pub.entries:
        users = ""
        if e.users:
            theirs = f" Mean over {e.users:,} users"
            users = theirs + ("." if e.users == ours["users"] else f", ours over {ours['users']:,}.")
        caveats = "".join(f" Caveat: {c}." for c in e.caveats)
        out.append(f"- {e.title}: {e.source}. Ties: {e.ties}.{users}{caveats}")
    return [*out, ""]


def published_section(runs: list[Result], meta: dict | None, files: list[Published]) -> str:
    """Every published file on this dataset beside our rows; the others in one line each."""
    if not files:
        return "_No published numbers given (`--published FILE`, docs/published/README.md)._\n"
    ours, where = our_stats(runs, meta)
    out, elsewhere = [TIES, ""], []
    for pub in files:
        why = other_dataset(pub, runs, ours)
        if why:
            elsewhere.append(f"- {pub.name} (`{pub.shown}`): not comparable — {why}.")
        else:
            out += _file_section(pub, runs, ours, where)
    if len(out) == 2:
        return "\n".join(["_No published numbers for this dataset._", "", *elsewhere]) + "\n"
    if elsewhere:
        out += ["Published files about other datasets:", *elsewhere, ""]
    return "\n".join(out)
