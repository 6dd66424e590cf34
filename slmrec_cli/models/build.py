"""An LLMRec from a base model (fresh LoRA, or a saved adapter), its weight files, and its parameter counts."""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path

import torch

from slmrec_cli.base_model import BaseModelRef
from slmrec_cli.config.models import LLMRecConfig
from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.io import save_safetensors
from slmrec_cli.models.adapter import ADAPTER, ADAPTER_FILES, load_adapter, save_adapter
from slmrec_cli.models.llmrec import LLMRec, add_lora

ID_TABLE = "item_embeddings.safetensors"
PROJECTIONS = "projections.safetensors"


def build_model(cfg: LLMRecConfig, base_model: str | BaseModelRef, id_table: torch.Tensor, *, device: str = "cpu",
                load_in_8bit: bool = False, load_in_4bit: bool = False, expect_hash: str | None = None,
                adapter_dir: Path | None = None, gradient_checkpointing: bool = False,
                dtype: torch.dtype | None = None):
    """(LLMRec, BaseModelRef): fresh LoRA, or the saved adapter in adapter_dir. The model's config is a copy of `cfg`
    with `hidden` set to the base's width (model.cfg; `cfg` is left as it was). dtype: the frozen base's (default: the
    device's, backbones.load_backbone); the LoRA and the projections stay float32 (peft keeps adapters in fp32)."""
    from slmrec_cli.backbones import load_backbone

    decoder, tokenizer, ref = load_backbone(base_model, cfg.layers, device=device, load_in_8bit=load_in_8bit,
                                            load_in_4bit=load_in_4bit, expect_hash=expect_hash, dtype=dtype)
    if load_in_8bit or load_in_4bit:
        from peft import prepare_model_for_kbit_training

        decoder = prepare_model_for_kbit_training(decoder, use_gradient_checkpointing=False)
    if gradient_checkpointing:
        # non-reentrant: works with DDP and needs no input that requires grad (ours come from the trainable `up`)
        enable = getattr(decoder, "activation_checkpointing_enable", None)  # transformers >= 5.2x renamed it
        if enable is not None:
            enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            decoder.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    decoder = add_lora(decoder, cfg) if adapter_dir is None else load_adapter(decoder, Path(adapter_dir))
    # the adapter's adapter_config.json names the base as the user did (an alias, a path), not slmrec's cache
    decoder.peft_config["default"].base_model_name_or_path = ref.ref
    return LLMRec(replace(cfg, hidden=ref.hidden_size), decoder, tokenizer, id_table), ref


def save_weights(model: LLMRec, out_dir: Path) -> list[str]:
    """LoRA in peft adapter format in the causal LM's layout (models/adapter.py; swapped in whole), the projections
    in safetensors, and a trained id table (--train-ids; a frozen one is the copy the run made at its start); the
    files written."""
    out_dir = Path(out_dir)
    tmp, old = out_dir / f".{ADAPTER}.tmp", out_dir / f".{ADAPTER}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(model.decoder, tmp, model.cfg.layers)
    shutil.rmtree(old, ignore_errors=True)
    if (out_dir / ADAPTER).exists():
        os.replace(out_dir / ADAPTER, old)
    os.replace(tmp, out_dir / ADAPTER)
    shutil.rmtree(old, ignore_errors=True)
    save_safetensors({f"up.{k}": v for k, v in model.up.state_dict().items()}
                     | {f"down.{k}": v for k, v in model.down.state_dict().items()}, out_dir / PROJECTIONS)
    if not model.cfg.train_ids:
        return [*ADAPTER_FILES, PROJECTIONS]
    save_safetensors({"item_embeddings": model.id_table.detach()}, out_dir / ID_TABLE)
    return [*ADAPTER_FILES, PROJECTIONS, ID_TABLE]


def load_projections(model: LLMRec, tensors: dict[str, torch.Tensor], where: Path) -> None:
    try:
        model.up.load_state_dict({k[3:]: v for k, v in tensors.items() if k.startswith("up.")})
        model.down.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("down.")})
    except RuntimeError as e:
        raise SlmrecError(f"{where} does not match config.json ({first_line(e)}); retrain the run") from None


def param_counts(model: LLMRec) -> dict[str, int]:
    """trainable = LoRA + projections (+ the id table under --train-ids); inference = what a merged export holds
    (layers, norm, projections and the prompt's token embeddings, not the whole vocabulary or the LoRA factors).
    total and inference leave the id table out, trained or frozen."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    embed = model._base().get_input_embeddings().weight
    prompt = (model.prefix_ids.numel() + model.suffix_ids.numel()) * embed.shape[1]
    table = model.id_table.numel() if model.cfg.train_ids else 0  # counted apart, as a frozen table (a buffer) is
    return {"trainable": trainable, "total": total - table,
            "inference": total - table - lora - embed.numel() + prompt}
