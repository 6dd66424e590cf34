"""bitsandbytes variants of the merged decoder (int8 LLM.int8(), nf4), through transformers' own loader."""

from __future__ import annotations

import copy
import logging
import tempfile
import warnings
from pathlib import Path

import torch

from slmrec_cli.errors import SlmrecError
from slmrec_cli.export.model import Recommender
from slmrec_cli.io import atomic_dir, save_safetensors


def need_bnb():
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SlmrecError("bitsandbytes variants need the quant extra: pip install '.[quant]'") from None
    # LLM.int8() on CPU warns on every matmul that it casts to fp16; once in the docs is enough
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def _config(kind: str):
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.float32)


def _load(folder: str, device: str, **kw):
    from transformers import AutoModel

    from slmrec_cli.backbones import quiet_transformers

    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModel.from_pretrained(folder, device_map=device, **kw)


def quantize_bnb(rec: Recommender, kind: str, out: Path, device: str = "cpu") -> Recommender:
    """Write OUT/ (quantized decoder in safetensors + head.safetensors) and return the quantized module."""
    from slmrec_cli.backbones import quiet_transformers

    need_bnb()
    with tempfile.TemporaryDirectory() as tmp:
        with quiet_transformers():  # no "Writing model shards" bar for a file slmrec writes as one step
            rec.decoder.save_pretrained(tmp)
        decoder = _load(tmp, device, quantization_config=_config(kind))
    with atomic_dir(out, force=True) as d, quiet_transformers():
        decoder.save_pretrained(str(d))
        save_safetensors(_head(rec), d / "head.safetensors")
    return _assemble(decoder, rec)


def _head(rec: Recommender) -> dict[str, torch.Tensor]:
    return {"prefix": rec.prefix, "suffix": rec.suffix, "id_table": rec.id_table,
            **{f"up.{k}": v for k, v in rec.up.state_dict().items()},
            **{f"down.{k}": v for k, v in rec.down.state_dict().items()}}


def _assemble(decoder, rec: Recommender) -> Recommender:
    up, down = copy.deepcopy(rec.up), copy.deepcopy(rec.down)
    return Recommender(decoder, rec.prefix, rec.suffix, up, down, rec.id_table, rec.max_len).eval()


def load_bnb(folder: Path, template: Recommender, device: str = "cpu") -> Recommender:
    """Reload a saved variant; `template` supplies the head shapes (the fp32 export)."""
    need_bnb()
    from slmrec_cli.runs import load_weights

    head = load_weights(Path(folder) / "head.safetensors")
    decoder = _load(str(folder), device)
    rec = _assemble(decoder, template)
    rec.prefix.copy_(head["prefix"])
    rec.suffix.copy_(head["suffix"])
    rec.id_table.copy_(head["id_table"])
    rec.up.load_state_dict({k[3:]: v for k, v in head.items() if k.startswith("up.")})
    rec.down.load_state_dict({k[5:]: v for k, v in head.items() if k.startswith("down.")})
    return rec
