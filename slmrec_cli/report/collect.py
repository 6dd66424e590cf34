"""Read run directories into plain records for `slmrec report`, and name each run by its role in the study."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from slmrec_cli.base_model import base_label
from slmrec_cli.config.distill import DistillOptions
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.distill.terms import L_KD, PAPER_TERMS
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import CHECKSUMS
from slmrec_cli.models.build import ID_TABLE
from slmrec_cli.runs import DataRecord, DistillRecord, Run, RunKind

ALL_TERMS = "all three"
DEFAULTS = DistillOptions()


@dataclass
class Result:
    """A finished run and what it produced: its metrics files, efficiency.json and probe, for the report's tables."""

    run: Run
    evals: dict[tuple[str, str], dict] = field(default_factory=dict)  # (split, protocol) → metrics record
    efficiency: dict | None = None
    probe: dict | None = None  # RUN/probe/test.json
    replicates: list[Result] = field(default_factory=list)  # runs of the same setting with other seeds (report order)

    @property
    def path(self) -> Path:
        return self.run.path

    @property
    def name(self) -> str:
        return self.run.name

    @property
    def seed(self) -> int:
        return self.run.train.seed

    @property
    def kind(self) -> RunKind:
        return self.run.kind

    @property
    def layers(self) -> int:
        return self.run.layers

    @property
    def data(self) -> DataRecord:
        return self.run.data

    @property
    def base(self) -> str:
        b = self.run.base_model
        if b is None:
            return "—"
        label = base_label(b)
        return b.ref + (f" [{label}]" if label else "")

    @property
    def distill(self) -> DistillRecord:
        """A student's distillation (only students have one)."""
        if self.run.distill is None:
            raise ValueError(f"{self.path} is a {self.kind.value} run: it has no distillation")
        return self.run.distill

    @property
    def options(self) -> DistillOptions:
        """A student's distillation options, typed (keys an older run lacks at their defaults)."""
        return self.distill.options

    @property
    def full_depth(self) -> bool:
        b = self.run.base_model
        return self.kind is RunKind.TEACHER and b is not None and self.layers == b.layers_total

    def metrics_record(self, protocol: str = "sampled", split: str = "test") -> dict | None:
        return self.evals.get((split, protocol))

    def metric(self, m: str, protocol: str = "sampled", split: str = "test") -> float | None:
        rec = self.metrics_record(protocol, split)
        return rec["metrics"][m] if rec else None


def terms_label(o: DistillOptions) -> str:
    """Which of the paper's terms a student used ('all three', '+ d_cos, l_ms', 'CE only'), with each weight that is
    not the default (λ_ms = 0.1 in a λ sweep), so runs that differ by a weight never share a row or a label."""
    on = [t for t in PAPER_TERMS if o.weight(t)]
    terms = ALL_TERMS if len(on) == len(PAPER_TERMS) else "+ " + ", ".join(t.name for t in on) if on else "CE only"
    weights = [f"λ_{t.name.split('_')[1]}={o.weight(t):g}" for t in on if o.weight(t) != DEFAULTS.weight(t)]
    return terms + (f", {', '.join(weights)}" if weights else "")


def kd_label(o: DistillOptions) -> str:
    """'' for the paper's loss; '+ L_kd λ=…, τ=…' for a student that also matched the teacher's item distribution,
    'L_kd only, …' when the paper's three terms were off."""
    if not o.weight(L_KD):
        return ""
    return (("L_kd only, " if terms_label(o) == "CE only" else "+ L_kd ")
            + f"λ={o.weight(L_KD):g}, τ={o.kd_temperature:g}")


def label(run: Result) -> str:
    """The paper's row names: SASRec, E4SRec-M, SLMRec N←M (with what differs from the default setup)."""
    if run.kind is RunKind.SASREC:
        return "SASRec"
    if run.kind is RunKind.TEACHER:
        return f"E4SRec-{run.layers}" + (" (full depth)" if run.full_depth else "")
    o = run.options
    terms = terms_label(o)
    hidden = terms == ALL_TERMS or (terms == "CE only" and o.weight(L_KD))  # the latter reads "L_kd only"
    extra = [t for t in ("" if hidden else terms,
                         f"B={o.blocks}" if o.blocks != DEFAULTS.blocks else "",
                         o.mode if o.mode != DEFAULTS.mode else "",
                         f"{o.norm_loss} norm" if o.norm_loss != DEFAULTS.norm_loss else "",
                         "aligned at every position" if o.align == "all" else "", kd_label(o)) if t]
    return f"SLMRec {o.student_layers}←{run.distill.teacher_layers}" + (f" ({'; '.join(extra)})" if extra else "")


def order_key(run: Result) -> tuple:
    """SASRec, teachers deepest first, then students with the default setup before their variants."""
    if run.kind is RunKind.SASREC:
        return (0, 0, run.name)
    if run.kind is RunKind.TEACHER:
        return (1, -run.layers, run.name)
    o = run.options
    default = (terms_label(o) == ALL_TERMS and not o.weight(L_KD)
               and (o.mode, o.blocks, o.align) == (DEFAULTS.mode, DEFAULTS.blocks, DEFAULTS.align))
    return (2, -run.distill.teacher_layers, -o.student_layers, not default, run.name)


# where the same setting was written down differently: when and by which version, and paths (the teacher's hash,
# the id table's checksum and the dataset's hash say what those paths held)
INCIDENTAL = {"": ("created", "version", "ids", "software", "command", "paths_from_run"), "train": ("seed",),
              "data": ("path", "name"), "base_model": ("path",), "distill": ("teacher", "teacher_cache")}
# options added after runs were made: at their default they change nothing, so older runs (without the key) still fold;
# in the typed sections every option at its default is dropped alike
LATER_DEFAULTS = {"": {"precision": "fp32"}, "train": asdict(TrainArgs()), "distill": asdict(DEFAULTS),
                  "model": {"train_ids": False}}


def setting_key(run: Result) -> str:
    """The run's configuration without its seed and without incidental fields: equal keys, same setting."""
    cfg = {k: v for k, v in run.run.config.items() if k not in INCIDENTAL[""]}
    for section, keys in INCIDENTAL.items():
        if section and isinstance(cfg.get(section), dict):
            cfg[section] = {k: v for k, v in cfg[section].items() if k not in keys}
    cfg = {k: v for k, v in cfg.items() if LATER_DEFAULTS[""].get(k, object()) != v}
    for section, defaults in LATER_DEFAULTS.items():
        if section and isinstance(cfg.get(section), dict):
            cfg[section] = {k: v for k, v in cfg[section].items() if defaults.get(k, object()) != v}
    sums = run.path / CHECKSUMS
    if run.kind.llm and sums.exists() and not run.run.llm_model.train_ids:  # the frozen SASRec table a teacher or
        # student was built on (a SASRec run's own table, or a trained one, is its output, other for every seed)
        cfg["id_table_sha256"] = json.loads(sums.read_text()).get("sha256", {}).get(ID_TABLE)
    return json.dumps(cfg, sort_keys=True)


def fold_replicates(runs: list[Result]) -> list[Result]:
    """Runs that differ only by seed become one row: the first given stands for its setting in every table, the
    others are its `replicates` (used where the report compares settings over seeds)."""
    firsts: dict[str, Result] = {}
    rows = []
    for run in runs:
        key = setting_key(run)
        first = firsts.get(key)
        if first is not None and run.seed not in {first.seed, *(r.seed for r in first.replicates)}:
            first.replicates.append(run)
        else:  # a new setting, or a rerun with a seed already seen (kept as its own row)
            firsts.setdefault(key, run)
            rows.append(run)
    return rows


def load_result(path: Path) -> Result:
    path = Path(path)
    if path.is_dir() and not (path / "config.json").exists():
        raise SlmrecError(f"{path} is not a run directory (no config.json); give dirs made by slmrec's stages")
    run = Result(Run.load(path))
    for f in sorted((path / "eval").glob("*-*.json")):
        split, protocol = f.stem.split("-", 1)
        run.evals[(split, protocol)] = json.loads(f.read_text())
    if (path / "efficiency.json").exists():
        run.efficiency = json.loads((path / "efficiency.json").read_text())
    if (path / "probe" / "test.json").exists():
        run.probe = json.loads((path / "probe" / "test.json").read_text())
    return run


def collect(paths: list[Path]) -> dict[str, list[Result]]:
    """Runs grouped by dataset content hash (in first-seen order), runs that differ only by seed folded into one
    (fold_replicates), each group in the paper's row order.
    Arguments that are not run dirs (a study's `runs/*` glob also matches caches and plots) are skipped only
    when they are plain files; a directory without config.json is an error, so a typo never passes silently."""
    groups: dict[str, list[Result]] = {}
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise SlmrecError(f"{p} does not exist; give run directories made by slmrec's stages")
        if p.is_file():
            continue
        run = load_result(p)
        if not run.evals:
            continue  # unfinished: no metrics yet
        groups.setdefault(run.data.hash, []).append(run)
    if not groups:
        raise SlmrecError("no finished runs among the arguments (none has eval/*.json); run `slmrec evaluate` first")
    return {h: sorted(fold_replicates(rs), key=order_key) for h, rs in groups.items()}
