"""Exports and run adapters in the standard formats (transformers, safetensors, ONNX metadata, peft), and exports that
refuse damaged files."""

import json
import re
import shutil

import numpy as np
import pytest
import torch

from slmrec_cli.errors import SlmrecError
from slmrec_cli.export.model import load_export
from tests.helpers import run_cli


def snippets(out) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (out / "README.md").read_text(), re.S)


def test_decoder_and_head_load_in_plain_transformers_and_safetensors(exported, capsys):
    """OUT/decoder is an AutoModel; the model card's code (AutoModel + safetensors, no slmrec) gives slmrec's scores,
    and its ONNX code runs."""
    from transformers import AutoModel

    _, _, out, _ = exported
    decoder = AutoModel.from_pretrained(out / "decoder")
    assert type(decoder).__name__ == "LlamaModel" and decoder.config.num_hidden_layers == 4
    onnx_code, torch_code = snippets(out)
    ns: dict = {}
    exec(onnx_code, ns)  # the card's own example
    assert ns["top10"].shape == (1, 10) and "pad_id" in capsys.readouterr().out
    exec(torch_code, ns)
    rec, cfg = load_export(out)
    items = [5, 9, 3, 7, 1, 2, 8, 11, 4, 6]  # longer than max_len: both read the last max_len
    with torch.no_grad():
        ref = rec.score_all(torch.tensor([items]))[0]
    assert (ns["scores"](items) - ref).abs().max().item() <= 1e-5


def test_onnx_files_carry_their_contract_and_the_card_says_what_it_is(exported):
    import onnxruntime as ort

    _, run, out, result = exported
    manifest = json.loads((out / "config.json").read_text())
    for name, variant in (("model.onnx", "onnx-fp32"), ("model.int8.onnx", "onnx-int8"),
                          ("model.int4.onnx", "onnx-int4")):
        meta = ort.InferenceSession(str(out / name), providers=["CPUExecutionProvider"]).get_modelmeta()
        props = meta.custom_metadata_map
        assert props["variant"] == variant and props["pad_id"] == "0" and props["source_run"] == str(run)
        assert props["max_len"] == str(manifest["max_len"]) and props["n_items"] == str(manifest["n_items"])
        assert props["slmrec_version"] and "leave-one-out" in props["protocol"]
        assert "column 0 is padding" in props["output.scores"] and "left-padded" in props["input.items"]
    card = (out / "README.md").read_text()
    mrr = result["quality"]["variants"][0]["metrics"]["sampled"]["MRR"]
    for words in (str(run), "teacher", "tiny-random", "first 4 of", "item_map.tsv", "column 0 is padding",
                  f"{100 * mrr:.2f}", "[batch, n_items + 1]"):
        assert words in card, words


def test_damaged_or_missing_files_are_one_line_errors(exported, tmp_path, capsys):
    """A truncated model.onnx (before: "internal error: InvalidProtobuf"), a lost decoder file, an edited item map,
    an export in the old layout: exit 2, one line naming the file, nothing loaded."""
    _, _, out, _ = exported
    copy = tmp_path / "exp"
    shutil.copytree(out, copy)
    raw = (copy / "item_map.tsv").read_text().splitlines()[1].split("\t")[1]
    onnx = copy / "model.onnx"
    onnx.write_bytes(onnx.read_bytes()[:1000])
    code, _, err = run_cli(["recommend", "--export", copy, "--history", raw, "--variant", "onnx-fp32"], capsys)
    assert code == 2 and str(onnx) in err and "damaged" in err and "Traceback" not in err, err
    assert len(err.strip().splitlines()) == 2  # "serving onnx-fp32 ..." and the error
    bench = (copy / "bench.json").read_text()
    code, _, err = run_cli(["export", "--bench-only", copy, "--batch-sizes", "1"], capsys)
    assert code == 2 and str(onnx) in err and (copy / "bench.json").read_text() == bench  # refused before running
    (copy / "decoder" / "model.safetensors").unlink()
    with pytest.raises(SlmrecError, match=r"decoder/model.safetensors is missing"):
        load_export(copy)
    with (copy / "item_map.tsv").open("a") as f:
        f.write("41\textra\n")
    code, _, err = run_cli(["recommend", "--export", copy, "--history", raw], capsys)
    assert code == 2 and "item_map.tsv is damaged" in err
    manifest = json.loads((copy / "config.json").read_text())
    del manifest["format_version"]  # what exports before decoder/ + head.safetensors wrote
    (copy / "config.json").write_text(json.dumps(manifest))
    code, _, err = run_cli(["recommend", "--export", copy, "--history", raw], capsys)
    assert code == 2 and "old layout" in err and "export the run again" in err


def test_export_checks_its_inputs_before_writing(tiny_runs, tmp_path, capsys):
    """A run whose dataset changed since training: refused before anything is written (no dir, no temp dir)."""
    data, _, run = tiny_runs
    shutil.copytree(data, tmp_path / data.name)
    shutil.copytree(run, tmp_path / run.name)  # its config finds the copied dataset (run-relative path)
    negatives = tmp_path / data.name / "negatives.npy"
    np.save(negatives, np.load(negatives)[:, ::-1].copy())
    code, _, err = run_cli(["export", "--run", tmp_path / run.name, "--out", tmp_path / "out"], capsys)
    assert code == 2 and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([data.name, run.name])


def causal_lm(layers: int):
    """tiny-random's weights as a LlamaForCausalLM cut to `layers`: what a user of plain transformers would load."""
    from transformers import LlamaForCausalLM

    from slmrec_cli.tiny_random import build_tiny

    inner, _ = build_tiny(layers)
    lm = LlamaForCausalLM(inner.config)
    lm.model.load_state_dict(inner.state_dict())
    return lm.eval()


def test_run_adapter_attaches_to_the_causal_lm_with_plain_peft(tiny_runs):
    from peft import PeftModel
    from safetensors.torch import load_file

    from slmrec_cli.runs import Run

    _, _, run = tiny_runs
    teacher = Run.load(run)
    model = teacher.load_model()
    adapter = json.loads((run / "adapter" / "adapter_config.json").read_text())
    assert adapter["base_model_name_or_path"] == teacher.base_model.ref == "tiny-random"
    peft_lm = PeftModel.from_pretrained(causal_lm(teacher.layers), str(run / "adapter"))
    saved = load_file(run / "adapter" / "adapter_model.safetensors")
    key = "base_model.model.model.layers.0.mlp.down_proj.lora_A.weight"
    loaded = peft_lm.base_model.model.model.layers[0].mlp.down_proj.lora_A["default"].weight
    assert torch.equal(loaded, saved[key]) and saved[key].abs().sum() > 0
    x = torch.randn(2, 5, teacher.base_model.hidden_size)
    with torch.no_grad():  # the same LoRA-adapted decoder as slmrec's
        got = peft_lm.base_model.model.model(inputs_embeds=x).last_hidden_state
        ref = model.decoder(inputs_embeds=x).last_hidden_state
    assert (got - ref).abs().max().item() <= 1e-5


def test_runs_with_the_old_adapter_layout_still_load(tiny_runs, tmp_path):
    """Runs saved before the causal-LM layout (keys base_model.model.layers...) load as before; an adapter that does
    not fit the model is refused rather than silently ignored."""
    from safetensors.torch import load_file, save_file

    from slmrec_cli.runs import Run, record_checksums

    _, _, run = tiny_runs
    old = tmp_path / run.name
    shutil.copytree(run, old)
    weights = old / "adapter" / "adapter_model.safetensors"
    tensors = {k.replace("base_model.model.model.", "base_model.model.", 1): v for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    record_checksums(old, ["adapter/adapter_model.safetensors"])
    x = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 6]])
    with torch.no_grad():
        assert torch.equal(Run.load(old).load_model().score_all(x), Run.load(run).load_model().score_all(x))
    save_file(dict(list(tensors.items())[1:]), weights, metadata={"format": "pt"})
    record_checksums(old, ["adapter/adapter_model.safetensors"])
    with pytest.raises(SlmrecError, match="does not fit this model"):
        Run.load(old).load_model()
