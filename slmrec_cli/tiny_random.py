"""`tiny-random`: a random-init 4-layer LLaMA (hidden 64) with a byte-level tokenizer, for tests and smoke runs.

Built offline from a fixed recipe and seed, so every run (and every depth) gets the same weights.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from slmrec_cli.base_model import TINY, BaseModelRef, set_depth

# tiny-random's whole recipe: its hash is taken over this dict, so changing any value changes the hash.
TINY_RECIPE: dict[str, Any] = {
    "recipe": "slmrec tiny-random v1",
    "seed": 0,
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "max_position_embeddings": 1024,
    "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False,
}
TINY_SPECIALS = ("<pad>", "<s>", "</s>", "<unk>")  # ids 256..259, after the 256 byte tokens


def tiny_ref() -> BaseModelRef:

    digest = hashlib.sha256(json.dumps(TINY_RECIPE, sort_keys=True).encode()).hexdigest()
    return BaseModelRef(ref=TINY, kind=TINY, path=None, hash=digest, pretrained=False,
                        layers_total=TINY_RECIPE["num_hidden_layers"], hidden_size=TINY_RECIPE["hidden_size"])


def build_tiny(layers: int) -> tuple[nn.Module, Any]:
    """The full random model from a fixed seed, then cut: every depth shares the same first layers."""
    from transformers import LlamaConfig, LlamaModel


    tokenizer = tiny_tokenizer()
    recipe = {k: v for k, v in TINY_RECIPE.items() if k not in ("recipe", "seed")}
    config = LlamaConfig(**recipe, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG stream untouched
        torch.manual_seed(TINY_RECIPE["seed"])
        decoder = LlamaModel(config)
    del decoder.layers[layers:]
    set_depth(decoder.config, layers)
    return decoder, tokenizer


def tiny_tokenizer() -> Any:
    """A byte-level BPE with no merges: one token per byte (ids 0..255) plus <pad> <s> </s> <unk>. Built offline."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {ch: i for i, ch in enumerate(sorted(pre_tokenizers.ByteLevel.alphabet()))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(list(TINY_SPECIALS))  # added here, in order, so their ids are fixed
    pad, bos, eos, unk = TINY_SPECIALS
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, bos_token=bos, eos_token=eos, unk_token=unk)
