"""`--random-init`: a base model built from a LLaMA-family config.json with seeded random weights, for drills at
shapes no checkpoint here has (the LLaMA-2-7B shape on a laptop). Never a model to report quality for.

Every tensor is drawn from its own generator, seeded by (recipe seed, tensor name), on the CPU in float32: the same
config gives the same weights in every stage, on every device and at every depth, so a 4-layer student starts from
exactly the first 4 layers of its 8-layer teacher's base. Only the `layers` layers asked for are ever built; the
parameters start on the meta device and are materialised one at a time, so nothing is initialised twice.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from slmrec_cli.base_model import (
    BaseModelRef,
    check_decoder,
    load_config,
    load_tokenizer,
    quiet_transformers,
    set_depth,
)
from slmrec_cli.errors import SlmrecError

RANDOM = "random"  # BaseModelRef.kind
RECIPE = {"recipe": "slmrec random-init v1", "seed": 0}
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "*.gguf")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")


def random_ref(folder: Path, ref: str, *, ignore_weights: bool = False) -> BaseModelRef:
    """The BaseModelRef of `--base-model FOLDER --random-init`: its hash is the recipe and config.json's bytes."""
    folder = folder.resolve()
    if not (folder / "config.json").is_file():
        raise SlmrecError(f"--base-model {ref} --random-init: {folder} has no config.json; pass a folder holding a "
                          "LLaMA-family config.json")
    weights = sorted(w.name for g in WEIGHT_GLOBS for w in folder.glob(g))
    if weights and not ignore_weights:  # never drop real weights silently
        raise SlmrecError(f"--base-model {ref} holds weights ({weights[0]}) that --random-init would ignore; drop "
                          "--random-init to train on them, or add --ignore-weights to build random ones anyway")
    config = load_config(folder, ref)
    check_decoder(config, ref)
    if getattr(config, "model_type", None) not in ("llama", "mistral", "qwen2", "qwen3"):
        raise SlmrecError(f"--base-model {ref} --random-init: model_type {config.model_type!r} is not one slmrec "
                          "builds at random (llama, mistral, qwen2, qwen3); pass a LLaMA-family config.json")
    digest = hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode())
    digest.update((folder / "config.json").read_bytes())
    return BaseModelRef(ref=ref, kind=RANDOM, path=str(folder), hash=digest.hexdigest(), pretrained=False,
                        layers_total=int(config.num_hidden_layers), hidden_size=int(config.hidden_size))


def random_tensor(name: str, shape: tuple[int, ...], std: float) -> torch.Tensor:
    """One parameter, float32 on the CPU: norm weights 1, other vectors (biases) 0, matrices N(0, std²) from a
    generator seeded by the recipe seed and the tensor's name (the LLaMA initialisation, reproducible per tensor)."""
    if len(shape) == 1:
        return torch.ones(shape) if name.endswith("norm.weight") else torch.zeros(shape)
    seed = int.from_bytes(hashlib.sha256(f"{RECIPE['seed']}/{name}".encode()).digest()[:8], "little") >> 1
    return torch.empty(shape).normal_(0.0, std, generator=torch.Generator().manual_seed(seed))


def build_random(ref: BaseModelRef, layers: int, device: str, dtype: torch.dtype) -> nn.Module:
    """The inner decoder of `ref`'s config cut to `layers` layers, its weights drawn by random_tensor."""
    from accelerate import init_empty_weights
    from accelerate.utils import set_module_tensor_to_device
    from transformers import AutoModel

    config = load_config(Path(ref.path), ref.ref)
    set_depth(config, layers)
    with init_empty_weights(), quiet_transformers():  # parameters on meta; buffers (rotary) real
        decoder = AutoModel.from_config(config)
    std = float(getattr(config, "initializer_range", 0.02))
    for name, param in list(decoder.named_parameters()):
        value = random_tensor(name, tuple(param.shape), std)
        set_module_tensor_to_device(decoder, name, device, value=value, dtype=dtype)
    return decoder.to(device)


class ItemsOnlyTokenizer:
    """Stands in for a tokenizer when a random-init folder has none: no text can be encoded, so only the
    items-only prompt (`{history}`, optionally after the BOS token from config.json) works."""

    padding_side = "left"

    def __init__(self, ref: str, bos_token_id: int | None, eos_token_id: Any = None) -> None:
        self.ref = ref
        self.bos_token_id = bos_token_id
        self.eos_token_id = eos_token_id
        self.pad_token = self.eos_token = self.unk_token = "<none>"

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        if text:
            raise SlmrecError(f"--base-model {self.ref} has no tokenizer files, so its prompt can hold no text "
                              f"(here {text.strip()[:40]!r}); pass --prompt '{{history}}' or add tokenizer files "
                              "(tokenizer.json, tokenizer_config.json) to the folder")
        return {"input_ids": []}


def random_tokenizer(ref: BaseModelRef) -> Any:
    """The folder's tokenizer when it has one, else ItemsOnlyTokenizer with config.json's BOS id."""
    folder = Path(ref.path)
    if any((folder / f).is_file() for f in TOKENIZER_FILES):
        return load_tokenizer(folder, ref.ref)
    config = load_config(folder, ref.ref)
    return ItemsOnlyTokenizer(ref.ref, getattr(config, "bos_token_id", None), getattr(config, "eos_token_id", None))


def check_prompt(ref: BaseModelRef, prompt_parts: tuple[str, str]) -> None:
    """Before anything is built: a random-init base without tokenizer files takes only an items-only prompt."""
    if ref.kind == RANDOM:
        tokenizer = random_tokenizer(ref)
        for text in prompt_parts:
            tokenizer(text)
