"""bitsandbytes variants of the merged decoder (int8 LLM.int8(), nf4), through transformers' own loader."""

from __future__ import annotations

import logging
import shutil
import warnings
from pathlib import Path

import torch

from slmrec_cli.errors import SlmrecError
from slmrec_cli.export.files import DECODER, HEAD
from slmrec_cli.export.model import Recommender, assemble
from slmrec_cli.io import atomic_dir


def need_bnb():
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise SlmrecError("bitsandbytes variants need the quant extra: pip install '.[quant]'") from None
    # LLM.int8() on CPU warns on every matmul that it casts to fp16; once in the docs is enough
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def compute_dtype(device: str) -> torch.dtype:
    """What a bitsandbytes variant computes in where it runs: bfloat16 on CUDA (QLoRA's nf4 compute dtype, the path
    a GPU deployment takes: the non-quantized layers, the activations and nf4's dequantized matmuls), float32 on the
    CPU (whose bf16 is emulated on most CPUs)."""
    return torch.bfloat16 if torch.device(device).type == "cuda" else torch.float32


def config(kind: str, device: str):
    from transformers import BitsAndBytesConfig

    if kind == "int8":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                              bnb_4bit_compute_dtype=compute_dtype(device))


def _load(folder: str, device: str, **kw):
    from transformers import AutoModel

    from slmrec_cli.backbones import quiet_transformers

    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModel.from_pretrained(folder, device_map=device, **kw)


def quantize_bnb(export_dir: Path, kind: str, out: Path, device: str = "cpu") -> None:
    """OUT/ (the export's decoder/ quantized, in safetensors, + a copy of its head.safetensors), quantized on the
    device the export runs on (bitsandbytes' CUDA kernels there, its CPU backend on the CPU): nf4's compute dtype,
    saved in the variant's config, is that device's (compute_dtype)."""
    from slmrec_cli.backbones import quiet_transformers

    need_bnb()
    decoder = _load(str(Path(export_dir) / DECODER), device, quantization_config=config(kind, device),
                    dtype=compute_dtype(device))
    with atomic_dir(out, force=True) as d, quiet_transformers():
        decoder.save_pretrained(str(d))
        shutil.copyfile(Path(export_dir) / HEAD, d / HEAD)


def load_bnb(folder: Path, max_len: int, device: str = "cpu") -> Recommender:
    """Reload a saved variant (its files checked by the caller): the quantized decoder and its head."""
    need_bnb()
    from slmrec_cli.runs import load_weights

    folder = Path(folder)
    dtype = compute_dtype(device)
    rec = assemble(_load(str(folder), device, dtype=dtype), load_weights(folder / HEAD), max_len, folder / HEAD, device)
    # the prompt's embeddings set the activations' dtype (Recommender.forward): the device's compute dtype
    rec.prefix, rec.suffix = rec.prefix.to(dtype), rec.suffix.to(dtype)
    return rec
