"""Reading a run directory back: `Run`, the one typed view of it, and its checked weight files. A run is a pure
function of (config.json, weights). Creating one and writing its config.json: run_dirs.py."""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import Enum
from pathlib import Path

import torch

from slmrec_cli.base_model import BaseModelRef
from slmrec_cli.config.distill import DistillOptions
from slmrec_cli.config.models import LLMRecConfig, SASRecConfig
from slmrec_cli.config.train import TrainArgs
from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.io import CHECKSUMS, file_sha256, read_json, write_json
from slmrec_cli.models.build import (
    ADAPTER,
    ADAPTER_FILES,
    ID_TABLE,
    PROJECTIONS,
    build_model,
    load_projections,
    save_weights,
)
from slmrec_cli.models.sasrec import SASRec
from slmrec_cli.run_dirs import RUN_FORMAT, RUN_FORMAT_VERSION, located


def load_run_config(run: Path) -> dict:
    """A run's config.json, checked: format, version, and the sections every later stage reads."""
    run = Path(run)
    path = run / "config.json"
    if not run.is_dir():
        raise SlmrecError(f"{run} does not exist; pass a run directory written by slmrec")
    if not path.exists():
        raise SlmrecError(f"{run} is not an slmrec run (no config.json); pass a directory written by a training stage")
    try:
        cfg = read_json(path)
    except (ValueError, UnicodeDecodeError):
        raise SlmrecError(f"{path} is not valid JSON; the run is damaged, retrain it") from None
    if not isinstance(cfg, dict) or cfg.get("format") != RUN_FORMAT:
        raise SlmrecError(f"{path} is not an slmrec run config; pass a directory written by a training stage")
    version = cfg.get("format_version", 0)
    if not isinstance(version, int):
        raise SlmrecError(f"{path} has a run format version {version!r}, not a number; the run is damaged, retrain it")
    if version > RUN_FORMAT_VERSION:
        raise SlmrecError(f"{run} was written by a newer slmrec (run format {version}); upgrade slmrec")
    sections: list[tuple[str, type]] = [("kind", str), ("model", dict), ("data", dict)]
    if cfg.get("kind") != RunKind.SASREC.value:
        sections.append(("base_model", dict))
    for key, kind in sections:
        if not isinstance(cfg.get(key), kind):
            raise SlmrecError(f"{path} has no valid '{key}' section; the run is damaged or incomplete, retrain it")
    if not all(isinstance(cfg["data"].get(k), str) for k in ("name", "path", "hash")):
        raise SlmrecError(f"{path} does not record its dataset (name, path, hash); the run is damaged, retrain it")
    return located(cfg, run)


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if not Path(path).exists():
        raise SlmrecError(f"{path} is missing; the run has no trained weights yet (train it, or --resume it)")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise SlmrecError(f"{path} is unreadable or truncated ({first_line(e)}); retrain the run") from None


def record_checksums(run_dir: Path, names: list[str]) -> None:
    """Record the sha256 of weight files a later stage loads (relative names), so a damaged file is refused."""
    path = Path(run_dir) / CHECKSUMS
    try:
        sums = read_json(path)["sha256"] if path.exists() else {}
    except (ValueError, KeyError, TypeError):
        sums = {}
    sums.update({name: file_sha256(Path(run_dir) / name) for name in names})
    write_json(path, {"format": "slmrec-checksums", "sha256": dict(sorted(sums.items()))})


def verify_checksum(run_dir: Path, name: str) -> None:
    """Refuse a file whose bytes are not those recorded when it was written (runs without checksums.json pass)."""
    path = Path(run_dir) / CHECKSUMS
    if not path.exists() or not (Path(run_dir) / name).exists():
        return
    try:
        expected = read_json(path)["sha256"].get(name)
    except (ValueError, KeyError, TypeError, AttributeError):
        raise SlmrecError(f"{path} is damaged; retrain the run") from None
    if expected is not None and file_sha256(Path(run_dir) / name) != expected:
        raise SlmrecError(f"{Path(run_dir) / name} does not match the sha256 recorded when it was written (damaged, "
                          "edited, or the run was killed while saving it); --resume or retrain the run")


def load_run_weights(run_dir: Path, name: str) -> dict[str, torch.Tensor]:
    """A run's safetensors file, checked against the run's recorded sha256 first."""
    if not (Path(run_dir) / name).exists():
        raise SlmrecError(f"{Path(run_dir) / name} is missing; the run has no trained weights yet (train it, "
                          "or --resume it)")
    verify_checksum(run_dir, name)
    return load_weights(Path(run_dir) / name)


QUANTIZATIONS = ("run", "none", "8bit", "4bit")  # how a later stage loads an LLM run's base: "run" = as it trained


def quantization_of(load_in_8bit: bool, load_in_4bit: bool) -> str:
    """The one value for the two --load-in flags: none, 8bit or 4bit (bitsandbytes)."""
    return "8bit" if load_in_8bit else "4bit" if load_in_4bit else "none"


class RunKind(str, Enum):
    """What wrote a run: pretrain-ids (SASRec), train-teacher or distill."""

    SASREC = "sasrec"
    TEACHER = "teacher"
    STUDENT = "student"

    @property
    def llm(self) -> bool:
        return self is not RunKind.SASREC


LLM_KINDS = (RunKind.TEACHER, RunKind.STUDENT)


@dataclass(frozen=True)
class DataRecord:
    """The dataset a run trained on: its name, where it is (resolved) and its content hash."""

    name: str
    path: Path
    hash: str


@dataclass(frozen=True)
class DistillRecord:
    """A student's distillation: its options and what the stage derived from the teacher."""

    options: DistillOptions
    teacher: Path
    teacher_hash: str
    teacher_layers: int
    pairs: tuple[tuple[int, int], ...]
    teacher_cache: Path | None = None


def _typed(cls, section: dict, what: str, strict: bool = True):
    """A recorded section as its config class; strict: a key the class lacks means the run is newer than this code."""
    known = {f.name for f in fields(cls)}
    if strict and (extra := sorted(set(section) - known)):
        raise SlmrecError(f"{what} records {extra[0]!r}, which this slmrec does not know; upgrade slmrec")
    try:
        return cls(**{k: v for k, v in section.items() if k in known})
    except (TypeError, ValueError, SlmrecError) as e:
        raise SlmrecError(f"{what} cannot be read ({first_line(e)}); retrain the run") from None


@dataclass(frozen=True)
class Run:
    """A run directory, loaded once and typed: every stage, the report and the export read a run through this."""

    path: Path
    kind: RunKind
    model: SASRecConfig | LLMRecConfig
    data: DataRecord
    train: TrainArgs
    targets: str
    quantization: str  # how an LLM run's base model was loaded as it trained: none | 8bit | 4bit ("none" for SASRec)
    base_model: BaseModelRef | None  # LLM runs
    distill: DistillRecord | None  # students
    precision: str  # the training precision: fp32 | bf16 | fp16
    ids: dict | None  # LLM runs: the SASRec run their id table came from ({"run", "data_hash"}), as recorded
    config: dict  # config.json as written (paths resolved): provenance, and the report's setting comparisons

    @classmethod
    def load(cls, path: Path | str) -> Run:
        """The run in directory `path`: config.json checked (load_run_config), every section typed."""
        return cls.from_config(Path(path), load_run_config(Path(path)))

    @classmethod
    def from_config(cls, path: Path, cfg: dict) -> Run:
        """The run whose (checked, located) config.json is `cfg`."""
        where = f"{path / 'config.json'}"
        try:
            kind = RunKind(cfg["kind"])
        except ValueError:
            raise SlmrecError(f"{path} is a '{cfg['kind']}' run, which this version of slmrec cannot load; "
                              "upgrade slmrec") from None
        model_cls = SASRecConfig if kind is RunKind.SASREC else LLMRecConfig
        model = _typed(model_cls, cfg["model"], f"{where}'s model section")
        base = (_typed(BaseModelRef, cfg["base_model"], f"{where}'s base_model section", strict=False)
                if kind.llm else None)
        distill = None
        if kind is RunKind.STUDENT:
            d = cfg.get("distill")
            if not isinstance(d, dict) or not all(k in d for k in ("teacher", "teacher_hash", "teacher_layers",
                                                                     "pairs")):
                raise SlmrecError(f"{where} has no valid 'distill' section; the run is damaged, retrain it")
            distill = DistillRecord(
                options=_typed(DistillOptions, d, f"{where}'s distill section", strict=False),
                teacher=Path(d["teacher"]), teacher_hash=d["teacher_hash"], teacher_layers=d["teacher_layers"],
                pairs=tuple((int(t), int(s)) for t, s in d["pairs"]),
                teacher_cache=Path(d["teacher_cache"]) if d.get("teacher_cache") else None)
        q = cfg.get("quantized") or {}
        data = cfg["data"]
        return cls(path=path, kind=kind, model=model, data=DataRecord(data["name"], Path(data["path"]), data["hash"]),
                   train=_typed(TrainArgs, cfg.get("train") or {}, f"{where}'s train section", strict=False),
                   targets=cfg.get("targets", "all" if kind is RunKind.SASREC else "last"),
                   quantization=quantization_of(bool(q.get("load_in_8bit")), bool(q.get("load_in_4bit"))),
                   base_model=base, distill=distill, precision=cfg.get("precision", "fp32"),
                   ids=cfg.get("ids") if isinstance(cfg.get("ids"), dict) else None, config=cfg)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def layers(self) -> int:
        return self.model.layers

    @property
    def llm_model(self) -> LLMRecConfig:
        """A teacher's or student's model section (after `require` of an LLM kind)."""
        if not isinstance(self.model, LLMRecConfig):
            raise SlmrecError(f"{self.path} is a SASRec run; pass a run from train-teacher or distill")
        return self.model

    @property
    def llm_base(self) -> BaseModelRef:
        """A teacher's or student's base model (after `require` of an LLM kind)."""
        if self.base_model is None:
            raise SlmrecError(f"{self.path} is a SASRec run; pass a run from train-teacher or distill")
        return self.base_model

    def require(self, *kinds: RunKind, hint: str, option: str = "") -> Run:
        """This run, when its kind is one of `kinds`; else one line: the option that took it, and `hint`."""
        if self.kind not in kinds:
            raise SlmrecError(f"{option + ' ' if option else ''}{self.path} is a '{self.kind.value}' run; {hint}")
        return self

    def check_data(self, data) -> None:
        """Refuse a dataset other than the one this run trained on."""
        if self.data.hash != data.content_hash:
            raise SlmrecError(f"{self.path} was trained on data {self.data.hash[:12]} ({self.data.name}) but "
                              f"{data.path} has hash {data.content_hash[:12]}; pass the dataset the run was trained on")

    def weights(self, name: str) -> dict[str, torch.Tensor]:
        """One of the run's safetensors files, checked against its recorded sha256 first."""
        return load_run_weights(self.path, name)

    def load_model(self, device: str = "cpu", quantization: str = "run", dtype: torch.dtype | None = None):
        """The model, with .score_all(histories) and .cfg.max_len. An LLM run's base is loaded as the run trained
        (8-bit or 4-bit runs stay so) unless `quantization` (none, 8bit, 4bit) says otherwise, in `dtype` (default:
        the device's, models.build)."""
        if isinstance(self.model, SASRecConfig):
            model = SASRec(self.model)
            try:
                model.load_state_dict(self.weights("model.safetensors"))
            except RuntimeError as e:
                raise SlmrecError(f"{self.path}/model.safetensors does not match its config.json "
                                  f"({str(e).splitlines()[0]}); retrain the run") from None
            return model.to(device).eval()
        return self._load_llmrec(device, self.quantization if quantization == "run" else quantization, dtype)

    def id_table(self, data) -> torch.Tensor:
        """The frozen SASRec table of a pretrain-ids run (for --ids), checked against the dataset and the config."""
        self.require(RunKind.SASREC, option="--ids", hint="pass a run from `slmrec pretrain-ids`")
        self.check_data(data)
        assert isinstance(self.model, SASRecConfig)
        table = self.weights(ID_TABLE).get("item_embeddings")
        if table is None or table.ndim != 2:
            raise SlmrecError(f"{self.path}/{ID_TABLE} has no [n_items + 1, dim] 'item_embeddings' tensor; retrain it")
        if table.shape[1] != self.model.dim:
            raise SlmrecError(f"{self.path}/{ID_TABLE} is {table.shape[1]} wide but its config says dim "
                              f"{self.model.dim}; the run is damaged, retrain it")
        if table.shape[0] != data.n_items + 1:
            raise SlmrecError(f"{self.path}/{ID_TABLE} has {table.shape[0]} rows, the dataset needs "
                              f"{data.n_items + 1}")
        return table

    def _load_llmrec(self, device: str, quantization: str, dtype: torch.dtype | None):
        """A teacher or student, every file checked: present, unaltered (checksums.json), and of the right shape."""
        cfg, run = self.llm_model, self.path
        table = self.weights(ID_TABLE).get("item_embeddings")
        if table is None or tuple(table.shape) != (cfg.n_items + 1, cfg.id_dim):
            shape = None if table is None else tuple(table.shape)
            raise SlmrecError(f"{run}/{ID_TABLE} holds {shape}, config.json needs ({cfg.n_items + 1}, {cfg.id_dim}); "
                              "the run is damaged, retrain it")
        for name in ADAPTER_FILES:
            if not (run / name).exists():
                raise SlmrecError(f"{run / name} is missing; the run has no trained weights yet (train or --resume "
                                  "it)")
            verify_checksum(run, name)
        model, _ = build_model(cfg, self.llm_base, table, device=device, load_in_8bit=quantization == "8bit",
                               load_in_4bit=quantization == "4bit", expect_hash=self.llm_base.hash,
                               adapter_dir=run / ADAPTER, dtype=dtype)
        load_projections(model, self.weights(PROJECTIONS), run / PROJECTIONS)
        return model.to(device).eval()


def save_llmrec_weights(model, run_dir: Path) -> None:
    """A teacher's or student's weights into its run, then their checksums."""
    record_checksums(run_dir, save_weights(model, run_dir))
