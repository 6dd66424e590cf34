"""An export directory's layout, its manifest (config.json) and its checksums (checksums.json, written and checked
like a run's): every file a variant loads is checked before it is loaded; a missing or damaged one is one line naming
it."""

from __future__ import annotations

from pathlib import Path

from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import CHECKSUMS

MANIFEST = "config.json"  # slmrec's description of the export (format "slmrec-export"), not a transformers config
EXPORT_FORMAT = "slmrec-export"
EXPORT_FORMAT_VERSION = 2  # 2: decoder/ + head.safetensors + checksums.json; 1: one model.safetensors
DECODER, HEAD, ITEM_MAP, CARD = "decoder", "head.safetensors", "item_map.tsv", "README.md"
FILES = {"torch-fp32": DECODER, "onnx-fp32": "model.onnx", "onnx-int8": "model.int8.onnx",
         "onnx-int4": "model.int4.onnx", "onnx-fp16": "model.fp16.onnx", "bnb-int8": "bnb-int8", "bnb-nf4": "bnb-nf4"}
# An ONNX file whose initializers pass protobuf's 2 GiB limit keeps them in one data file next to it, named after it
# (model.onnx → model.onnx.data, as ONNX Runtime's quantizers name theirs); the .onnx refers to it by that relative
# name, so the two must stay side by side.
EXTERNAL_DATA_SUFFIX = ".data"
# The ONNX Runtime execution providers each ONNX variant is made for (the manifest and its metadata_props say so):
# int8 (MatMulInteger) and int4 (MatMulNBits) for CPU serving, fp16 for CUDA (CPU kernels for fp16 are few and slow).
MEANT_FOR = {"onnx-fp32": ["CPUExecutionProvider", "CUDAExecutionProvider"], "onnx-int8": ["CPUExecutionProvider"],
             "onnx-int4": ["CPUExecutionProvider"], "onnx-fp16": ["CUDAExecutionProvider"]}
REPORTS = ("quality.json", "bench.json", "export_info.json", CARD, CHECKSUMS)  # rewritten later; nothing loads them
AGAIN = "export the run again (slmrec export --force)"


def served_files(export_dir: Path) -> list[str]:
    """Every file of the export that something loads (relative names): what checksums.json records."""
    root = Path(export_dir)
    names = (f.relative_to(root).as_posix() for f in root.rglob("*") if f.is_file())
    return sorted(n for n in names if n not in REPORTS)


def record(export_dir: Path) -> None:
    from slmrec_cli.runs import record_checksums

    record_checksums(export_dir, served_files(export_dir))


def recorded(export_dir: Path) -> dict[str, str]:
    """checksums.json's {relative name: sha256}. Missing or damaged, it is refused: every export slmrec loads was
    written with one (a run's may be missing: runs.verify_checksum)."""
    from slmrec_cli.io import read_json

    path = Path(export_dir) / CHECKSUMS
    if not path.exists():
        raise SlmrecError(f"{path} is missing, so no file of the export can be checked; {AGAIN}")
    try:
        sums = read_json(path)["sha256"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        sums = None
    if not isinstance(sums, dict) or not sums:
        raise SlmrecError(f"{path} is damaged; {AGAIN}")
    return sums


def verify(export_dir: Path, names: list[str]) -> None:
    """Each named file is recorded in checksums.json, present, and has the bytes it was exported with."""
    from slmrec_cli.io import file_sha256

    export_dir = Path(export_dir)
    sums = recorded(export_dir)  # read once for every name
    for name in names:
        path = export_dir / name
        if name not in sums:
            raise SlmrecError(f"{path} is not recorded in {export_dir / CHECKSUMS}; {AGAIN}")
        if not path.is_file():
            raise SlmrecError(f"{path} is missing (the export was written with it); {AGAIN}")
        if file_sha256(path) != sums[name]:
            raise SlmrecError(f"{path} is damaged: its sha256 is not the one recorded in checksums.json when it was "
                              f"exported (truncated, edited, or a partial copy); {AGAIN}")


def external_data_name(file: str) -> str:
    """The data file an ONNX file's initializers live in when they are kept outside it."""
    return file + EXTERNAL_DATA_SUFFIX


def variant_files(export_dir: Path, name: str, sums: dict[str, str] | None = None) -> list[str]:
    """The recorded files a variant loads (relative names): its file or folder, an ONNX file's external data file,
    and the torch head for torch-fp32."""
    sums = recorded(export_dir) if sums is None else sums
    top = FILES[name]
    return sorted(n for n in sums if n == top or n.startswith(f"{top}/") or n == external_data_name(top)
                  or (name == "torch-fp32" and n == HEAD))


def variant_layout(export_dir: Path) -> dict[str, dict]:
    """The manifest's "variants": each variant written in `export_dir` with the files it loads (relative names) and,
    for ONNX files, its external data file (or None) and the execution providers it is meant for. Read from the
    directory as it is written, before checksums.json records the same files."""
    root = Path(export_dir)
    out: dict[str, dict] = {}
    for name, top in FILES.items():
        path = root / top
        if not path.exists():
            continue
        files = sorted(f.relative_to(root).as_posix() for f in path.rglob("*") if f.is_file()) if path.is_dir() \
            else [top]
        entry: dict = {"files": files}
        if name == "torch-fp32":
            files.append(HEAD)
        if name in MEANT_FOR:
            data = external_data_name(top)
            entry["external_data"] = data if (root / data).is_file() else None
            if entry["external_data"]:
                files.append(data)
            entry["meant_for"] = MEANT_FOR[name]
        out[name] = entry
    return out


def read_manifest(export_dir: Path) -> dict:
    """The export's config.json, checked: an slmrec export in the current layout, unaltered."""
    from slmrec_cli.io import read_json

    export_dir = Path(export_dir)
    path = export_dir / MANIFEST
    if not path.is_file():
        raise SlmrecError(f"{export_dir} is not an slmrec export (no {MANIFEST}); run `slmrec export` first")
    try:
        cfg = read_json(path)
    except (ValueError, UnicodeDecodeError):
        raise SlmrecError(f"{path} is not valid JSON; {AGAIN}") from None
    if not isinstance(cfg, dict) or cfg.get("format") != EXPORT_FORMAT:
        raise SlmrecError(f"{path} is not an slmrec export config; pass a directory written by `slmrec export`")
    version = cfg.get("format_version", 1)
    if not isinstance(version, int) or version < EXPORT_FORMAT_VERSION:
        raise SlmrecError(f"{export_dir} is an export in the old layout (one model.safetensors, no checksums) that "
                          f"this slmrec no longer loads; {AGAIN}")
    if version > EXPORT_FORMAT_VERSION:
        raise SlmrecError(f"{export_dir} was written by a newer slmrec (export format {version}); upgrade slmrec")
    verify(export_dir, [MANIFEST])
    return cfg
