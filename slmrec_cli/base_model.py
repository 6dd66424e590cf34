"""What every base-model source shares: the reference a run records, the cache root, checks of a Hugging Face
folder, and a quiet transformers. The loader (backbones), GGUF conversion and tiny-random all build on it."""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmrec_cli.errors import SlmrecError

SMOLLM2 = "smollm2-135m"
TINY = "tiny-random"


@dataclass
class BaseModelRef:
    """What a run's config.json records about its base model (JSON-able via dataclasses.asdict)."""

    ref: str  # what the user typed: "smollm2-135m", "tiny-random", a path
    kind: str  # "alias" | "hf" | "gguf" | "tiny-random" | "random" (--random-init)
    path: str | None  # the HF folder loaded (after conversion for alias/gguf); None for tiny-random
    hash: str  # sha256 hex: GGUF bytes (alias/gguf), folder fingerprint (hf), recipe (tiny-random)
    pretrained: bool
    layers_total: int  # depth of the full model
    hidden_size: int


def base_label(base: BaseModelRef | dict[str, Any]) -> str:
    """How reports name a base model's weights: "" when pretrained, else what they are instead."""
    b = asdict(base) if isinstance(base, BaseModelRef) else base
    if b.get("pretrained", True):
        return ""
    return "random weights (drill)" if b.get("kind") == "random" else "not pretrained"


def slmrec_home() -> Path:
    """The cache root: $SLMREC_HOME, else ~/.cache/slmrec."""
    return Path(os.environ.get("SLMREC_HOME") or "~/.cache/slmrec").expanduser()


def error_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:200]}" if text else type(e).__name__


def inspect_folder(folder: Path, ref: str) -> tuple[Any, list[Path]]:
    """Check that `folder` holds a LLaMA-family causal decoder in safetensors; return (config, weight files)."""
    if not (folder / "config.json").is_file():
        raise SlmrecError(f"--base-model {ref}: {folder} has no config.json; pass a Hugging Face model folder "
                          "(config.json, *.safetensors, tokenizer files)")
    weights = sorted(folder.glob("*.safetensors"))
    if not weights and not any(folder.glob("*.bin")):
        raise SlmrecError(f"--base-model {ref}: {folder} has a config.json but no weights; add its *.safetensors, "
                          "or pass --random-init to build seeded random weights for a drill")
    if not weights:
        raise SlmrecError(f"--base-model {ref}: {folder} has no *.safetensors weights (pickled .bin files are "
                          "not loaded); convert the checkpoint to safetensors")
    config = load_config(folder, ref)
    check_decoder(config, ref)
    return config, weights


def load_config(folder: Path, ref: str) -> Any:
    from transformers import AutoConfig

    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(folder)  # never trust_remote_code: only built-in architectures
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SlmrecError(f"--base-model {ref}: transformers cannot read {folder}/config.json "
                          f"({error_line(e)}); pass a LLaMA-family model folder") from None


def load_tokenizer(folder: Path, ref: str) -> Any:
    from transformers import AutoTokenizer

    try:
        with quiet_transformers():
            return AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise SlmrecError(f"--base-model {ref}: no usable tokenizer in {folder} ({error_line(e)}); "
                          "add the model's tokenizer files (tokenizer.json, tokenizer_config.json)") from None


def check_decoder(config: Any, ref: str) -> None:
    """A causal LM whose inner model has .embed_tokens, a .layers ModuleList and a final .norm."""
    from transformers import MODEL_FOR_CAUSAL_LM_MAPPING, AutoModel

    what = f"--base-model {ref}: {getattr(config, 'model_type', '?')}"
    if type(config) not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise SlmrecError(f"{what} is not a causal decoder LM; pass a LLaMA-family model (LLaMA, Mistral, Qwen2...)")
    if not isinstance(getattr(config, "num_hidden_layers", None), int) or not getattr(config, "hidden_size", None):
        raise SlmrecError(f"{what} has no num_hidden_layers/hidden_size in its config; pass a LLaMA-family model")
    shallow = copy.deepcopy(config)
    set_depth(shallow, 1)
    try:
        with torch.device("meta"), quiet_transformers():  # a weightless 1-layer skeleton: instant, no memory
            skeleton = AutoModel.from_config(shallow)
    except (ValueError, KeyError, TypeError) as e:
        raise SlmrecError(f"{what} has no plain decoder class ({error_line(e)}); pass a LLaMA-family model") from None
    if not (isinstance(getattr(skeleton, "layers", None), nn.ModuleList) and hasattr(skeleton, "embed_tokens")
            and hasattr(skeleton, "norm")):
        raise SlmrecError(f"{what} is not a LLaMA-family decoder (needs embed_tokens, layers, norm); "
                          "pass a LLaMA-family model (LLaMA, Mistral, Qwen2, SmolLM...)")


def set_depth(config: Any, layers: int) -> None:
    config.num_hidden_layers = layers
    # per-layer lists (Qwen2/3 `layer_types`: full vs sliding attention) must match the new depth
    if isinstance(getattr(config, "layer_types", None), list):
        config.layer_types = config.layer_types[:layers]


@contextmanager
def quiet_transformers(progress: bool = False) -> Iterator[None]:
    """Silence transformers' warnings (and, unless asked, its progress bars) for one call; restore after."""
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    if not progress:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
