"""The whole inference path folded into one module: item history [B, T] → user vector [B, d0] → scores.
LoRA is merged, the prompt's token embeddings are constants, the vocabulary table is gone. Saved as OUT/decoder/
(transformers' save_pretrained: AutoModel loads it) and OUT/head.safetensors (the rest); reloading needs neither the
base model files nor peft."""

from __future__ import annotations

import shutil
import warnings
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from slmrec_cli import __version__
from slmrec_cli.errors import SlmrecError, first_line
from slmrec_cli.export.files import (
    AGAIN,
    DECODER,
    EXPORT_FORMAT,
    EXPORT_FORMAT_VERSION,
    HEAD,
    ITEM_MAP,
    MANIFEST,
    read_manifest,
    variant_files,
    verify,
)
from slmrec_cli.io import save_safetensors, write_json
from slmrec_cli.models.llmrec import splice
from slmrec_cli.runs import LLM_KINDS, Run


class Recommender(nn.Module):
    def __init__(self, decoder: nn.Module, prefix: torch.Tensor, suffix: torch.Tensor, up: nn.Linear,
                 down: nn.Linear, id_table: torch.Tensor, max_len: int):
        super().__init__()
        self.decoder, self.up, self.down, self.max_len = decoder, up, down, max_len
        self.register_buffer("prefix", prefix.detach().clone())
        self.register_buffer("suffix", suffix.detach().clone())
        self.register_buffer("id_table", id_table.detach().float().clone())

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """Left-padded item ids [B, T] → user vectors [B, d0] (only the last max_len items are read)."""
        items = items[:, -self.max_len :]
        dtype = self.prefix.dtype
        hist = self.up(self.id_table[items].to(self.up.weight.dtype)).to(dtype)
        x, mask, pos = splice(self.prefix, hist, self.suffix, items)
        h = self.decoder(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=False).last_hidden_state
        return self.down(h[:, -1].to(self.down.weight.dtype))

    def score_all(self, items: torch.Tensor) -> torch.Tensor:
        return self(items).float() @ self.id_table.float().T

    def score(self, items: torch.Tensor, candidates: torch.Tensor) -> torch.Tensor:
        """Scores of candidate ids [B, C] for each user."""
        return torch.einsum("bd,bcd->bc", self(items).float(), self.id_table[candidates].float())


class WithScores(nn.Module):
    """The ONNX graph: items → (user vectors, scores over every item)."""

    def __init__(self, rec: Recommender):
        super().__init__()
        self.rec = rec

    def forward(self, items: torch.Tensor):
        user = self.rec(items)
        return user, user.float() @ self.rec.id_table.float().T


def run_device(run: Run) -> str:
    """Where a run trained: "cuda" when its efficiency.json names a CUDA device, or when it trained in fp16 (which
    needs CUDA); else "cpu"."""
    from slmrec_cli.io import read_json

    try:
        if str(read_json(run.path / "efficiency.json").get("device", "")).startswith("cuda"):
            return "cuda"
    except (OSError, ValueError, AttributeError):
        pass
    return "cuda" if run.precision == "fp16" else "cpu"


def merge_run(run: Run, device: str = "cpu") -> Recommender:
    """Merge a teacher/student run's LoRA into its base layers and fold the prompt into constants, on `device`. The
    base is loaded as the run trained on it (bfloat16 on CUDA, float32 on the CPU), then the whole model is cast to
    float32 and merged there: W + BA in fp32, the export's torch-fp32. `rec.merge_info` says how, for quality.json."""
    run.require(*LLM_KINDS, hint="export takes a teacher or student run")
    # an 8-bit or 4-bit run merges into its base loaded in full precision (the QLoRA convention); quality.json then
    # compares the variants with the run as it trained (build.as_trained_quality)
    model = run.load_model(device, quantization="none")
    base_dtype = str(next(model.decoder.parameters()).dtype).removeprefix("torch.")
    model.float()
    embed = model._base().get_input_embeddings()
    with torch.no_grad():
        prefix, suffix = embed(model.prefix_ids), embed(model.suffix_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        decoder = model.decoder.merge_and_unload()
    # never used (inputs arrive as embeddings); on the model's device, so that it does not split the module
    decoder.embed_tokens = nn.Embedding(1, prefix.shape[-1], device=prefix.device)
    decoder.config.vocab_size = 1
    decoder.config.dtype = torch.float32  # what AutoModel loads it in ("auto" reads it): not the base's bfloat16
    decoder.config.pad_token_id = decoder.config.bos_token_id = decoder.config.eos_token_id = None
    rec = Recommender(decoder, prefix, suffix, model.up, model.down, model.id_table, model.cfg.max_len).eval()
    rec.merge_info = {"device": str(torch.device(device)), "base_loaded_as": base_dtype, "merged_in": "float32",
                      "run_trained_on": run_device(run), "run_precision": run.precision,
                      "run_quantization": run.quantization}
    return rec


def head_tensors(rec: Recommender) -> dict[str, torch.Tensor]:
    """Everything but the decoder: the prompt's token embeddings, the projections and the item table."""
    return {"prefix": rec.prefix, "suffix": rec.suffix, "id_table": rec.id_table,
            **{f"up.{k}": v for k, v in rec.up.state_dict().items()},
            **{f"down.{k}": v for k, v in rec.down.state_dict().items()}}


def save_head(rec: Recommender, path: Path) -> None:
    save_safetensors(head_tensors(rec), path, metadata={"format": "pt", "max_len": str(rec.max_len), "pad_id": "0"})


def assemble(decoder: nn.Module, head: dict[str, torch.Tensor], max_len: int, where: Path,
             device: str = "cpu") -> Recommender:
    """A Recommender from a decoder (already where it runs) and the tensors of a head.safetensors."""
    try:
        (d1, d0), table = head["up.weight"].shape, head["id_table"].to(device)
        up, down = nn.Linear(d0, d1, device=device), nn.Linear(d1, d0, device=device)
        up.load_state_dict({k[3:]: v for k, v in head.items() if k.startswith("up.")})
        down.load_state_dict({k[5:]: v for k, v in head.items() if k.startswith("down.")})
        rec = Recommender(decoder, head["prefix"].to(device), head["suffix"].to(device), up, down, table, max_len)
    except (KeyError, ValueError, RuntimeError) as e:
        raise SlmrecError(f"{where} is not a complete export head ({first_line(e)}); {AGAIN}") from None
    return rec.eval()


def save_export(rec: Recommender, run: Run, out: Path) -> dict:
    """OUT/decoder/ (transformers save_pretrained), OUT/head.safetensors, the manifest and the item map; the
    manifest written."""
    from slmrec_cli.backbones import quiet_transformers

    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():  # no "Writing model shards" bar for a file slmrec writes as one step
        rec.decoder.save_pretrained(str(out / DECODER))
    save_head(rec, out / HEAD)
    config = {"format": EXPORT_FORMAT, "format_version": EXPORT_FORMAT_VERSION, "version": __version__,
              "source_run": str(run.path), "kind": run.kind.value,
              "base_model": asdict(run.llm_base),
              "data": {"name": run.data.name, "path": str(run.data.path), "hash": run.data.hash},
              "layers": rec.decoder.config.num_hidden_layers, "max_len": rec.max_len,
              "n_items": rec.id_table.shape[0] - 1, "id_dim": rec.id_table.shape[1], "hidden": rec.prefix.shape[-1],
              "prompt_tokens": [rec.prefix.shape[0], rec.suffix.shape[0]], "decoder": DECODER, "head": HEAD,
              "item_map": ITEM_MAP}
    write_json(out / MANIFEST, config)
    shutil.copyfile(run.data.path / ITEM_MAP, out / ITEM_MAP)
    return config


def load_decoder(folder: Path, **kw) -> nn.Module:
    """A saved decoder through transformers' own loader (never remote code)."""
    from transformers import AutoModel

    from slmrec_cli.backbones import quiet_transformers

    try:
        with quiet_transformers(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return AutoModel.from_pretrained(str(folder), **kw)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        raise SlmrecError(f"{folder} is not a loadable decoder ({first_line(e)}); {AGAIN}") from None


def load_export(path: Path, device: str = "cpu") -> tuple[Recommender, dict]:
    """The torch-fp32 variant (decoder/ + head.safetensors), every file checked against checksums.json first."""
    from slmrec_cli.runs import load_weights

    path = Path(path)
    cfg = read_manifest(path)
    verify(path, variant_files(path, "torch-fp32"))
    rec = assemble(load_decoder(path / DECODER), load_weights(path / HEAD), cfg["max_len"], path / HEAD)
    return rec.to(device).eval(), cfg
