"""--random-init: a base model from a LLaMA-family config.json and seeded random weights (drills at a model's shape)."""

from __future__ import annotations

import json

import pytest
import torch

from slmrec_cli.backbones import load_backbone, resolve_base_model
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import read_json
from tests.helpers import run_cli

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 32, "intermediate_size": 64,
          "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 300,
          "max_position_embeddings": 256, "rms_norm_eps": 1e-5, "bos_token_id": 1, "eos_token_id": 2,
          "initializer_range": 0.02, "tie_word_embeddings": False}


def config_dir(tmp_path, **changes):
    folder = tmp_path / "shape"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(CONFIG | changes))
    return folder


def test_a_config_without_weights_needs_random_init(tmp_path):
    folder = config_dir(tmp_path)
    with pytest.raises(SlmrecError, match="no weights.*--random-init"):
        resolve_base_model(str(folder))
    ref = resolve_base_model(str(folder), random_init=True)
    assert (ref.kind, ref.pretrained, ref.layers_total, ref.hidden_size) == ("random", False, 4, 32)


def test_same_config_same_weights_at_every_depth(tmp_path):
    folder = config_dir(tmp_path)
    ref = resolve_base_model(str(folder), random_init=True)
    full, tok, _ = load_backbone(ref, 4)
    again, _, _ = load_backbone(ref, 4)
    cut, _, _ = load_backbone(ref, 2)
    full_sd, cut_sd = full.state_dict(), cut.state_dict()
    assert all(torch.equal(v, again.state_dict()[k]) for k, v in full_sd.items())
    assert set(cut_sd) < set(full_sd) and all(torch.equal(v, full_sd[k]) for k, v in cut_sd.items())
    assert torch.equal(full.norm.weight, torch.ones(32)) and full.embed_tokens.weight.std().item() == pytest.approx(
        0.02, rel=0.1)
    assert len(full.layers) == 4 and len(cut.layers) == 2 and tok.bos_token_id == 1
    # another config is another base: its hash differs, so a run never reloads onto it
    (tmp_path / "b").mkdir()
    other = resolve_base_model(str(config_dir(tmp_path / "b", hidden_size=48)), random_init=True)
    assert other.hash != ref.hash


def test_real_weights_are_never_ignored_silently(tmp_path):
    folder = config_dir(tmp_path)
    (folder / "model.safetensors").write_bytes(b"x")
    with pytest.raises(SlmrecError, match="--ignore-weights"):
        resolve_base_model(str(folder), random_init=True)
    assert resolve_base_model(str(folder), random_init=True, ignore_weights=True).kind == "random"


@pytest.mark.parametrize("change, match", [({"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"]}, "gpt2"),
                                           ({"model_type": "t5"}, "t5")])
def test_not_llama_family_is_refused(tmp_path, change, match):
    folder = config_dir(tmp_path, **change)
    with pytest.raises(SlmrecError, match=match):
        resolve_base_model(str(folder), random_init=True)


def test_random_init_needs_a_folder(tmp_path):
    with pytest.raises(SlmrecError, match="needs a folder"):
        resolve_base_model("tiny-random", random_init=True)
    with pytest.raises(SlmrecError, match="no config.json"):
        resolve_base_model(str(tmp_path), random_init=True)


def test_without_tokenizer_only_the_items_only_prompt(tiny_runs, tmp_path, capsys):
    data, ids, _ = tiny_runs
    folder = config_dir(tmp_path)
    base = ["train-teacher", "--data", data, "--ids", ids, "--base-model", folder, "--layers", "2", "--max-len", "8",
            "--lora-r", "4", "--epochs", "1", "--eval-batch", "64"]
    code, _, err = run_cli([*base, "--out", tmp_path / "t-instr", "--prompt", "instruction", "--targets", "last"],
                           capsys)
    assert code == 2 and "--random-init" in err and len(err.strip().splitlines()) == 1  # no weights, no flag
    code, _, err = run_cli([*base, "--out", tmp_path / "t-instr", "--prompt", "instruction", "--targets", "last",
                            "--random-init"], capsys)
    assert code == 2 and "no tokenizer files" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t-instr" / "config.json").exists()
    code, _, err = run_cli(["train-teacher", "--data", data, "--ids", ids, "--out", tmp_path / "x",
                            "--ignore-weights"], capsys)
    assert code == 2 and "only goes with --random-init" in err


def test_a_drill_runs_through_the_stages(tiny_runs, tmp_path, capsys):
    """teacher → student (the teacher's base, first layers) → evaluate → report, each row saying what it is."""
    data, ids, _ = tiny_runs
    folder = config_dir(tmp_path)
    t, s = tmp_path / "t", tmp_path / "s"
    code, _, err = run_cli(["train-teacher", "--data", data, "--ids", ids, "--base-model", folder, "--random-init",
                            "--layers", "2", "--max-len", "8", "--lora-r", "4", "--epochs", "1", "--prompt",
                            "{history}", "--eval-batch", "64", "--out", t], capsys)
    assert code == 0, err
    cfg = read_json(t / "config.json")
    assert cfg["base_model"]["kind"] == "random" and cfg["base_model"]["pretrained"] is False
    code, _, err = run_cli(["distill", "--teacher", t, "--student-layers", "1", "--blocks", "1", "--epochs", "1",
                            "--eval-batch", "64", "--out", s], capsys)
    assert code == 0, err
    assert read_json(s / "config.json")["base_model"]["hash"] == cfg["base_model"]["hash"]
    code, out, err = run_cli(["evaluate", t, s, "--split", "valid", "--reuse", "--json"], capsys)
    assert code == 0, err
    valid = read_json(t / "eval" / "valid-sampled.json")
    assert json.loads(out)[0]["metrics"]["MRR"] == pytest.approx(valid["metrics"]["MRR"])
    code, _, err = run_cli(["report", t, s, "--out", tmp_path / "r.md"], capsys)
    assert code == 0, err
    assert "random weights (drill)" in (tmp_path / "r.md").read_text()
