"""The whole inference path folded into one module: item history [B, T] → user vector [B, d0] → scores.
LoRA is merged, the prompt's token embeddings are constants, the vocabulary table is gone; reloading needs
transformers' model class for the decoder architecture but neither the base model files nor peft."""

from __future__ import annotations

import shutil
import warnings
from pathlib import Path

import torch
from torch import nn

from slmrec_cli import __version__
from slmrec_cli.errors import SlmrecError
from slmrec_cli.io import read_json, save_safetensors, write_json
from slmrec_cli.models.llmrec import splice

EXPORT_FORMAT = "slmrec-export"


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


def merge_run(run: Path, device: str = "cpu") -> tuple[Recommender, dict]:
    """Merge a teacher/student run's LoRA into its base layers and fold the prompt into constants."""
    from slmrec_cli.runs import load_model

    cfg, model = load_model(run, device)
    if cfg.get("kind") not in ("teacher", "student"):
        raise SlmrecError(f"{run} is a '{cfg.get('kind')}' run; export takes a teacher or student run")
    embed = model._base().get_input_embeddings()
    with torch.no_grad():
        prefix, suffix = embed(model.prefix_ids), embed(model.suffix_ids)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        decoder = model.decoder.merge_and_unload()
    decoder.embed_tokens = nn.Embedding(1, prefix.shape[-1])  # never used: inputs arrive as embeddings
    decoder.config.vocab_size = 1
    decoder.config.pad_token_id = decoder.config.bos_token_id = decoder.config.eos_token_id = None
    rec = Recommender(decoder, prefix, suffix, model.up, model.down, model.id_table, model.cfg.max_len).eval()
    return rec, cfg


def save_export(rec: Recommender, run_cfg: dict, run: Path, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    save_safetensors(dict(rec.state_dict()), out / "model.safetensors")
    config = {"format": EXPORT_FORMAT, "version": __version__, "source_run": str(run), "kind": run_cfg["kind"],
              "base_model": run_cfg["base_model"], "data": run_cfg["data"], "max_len": rec.max_len,
              "n_items": rec.id_table.shape[0] - 1, "id_dim": rec.id_table.shape[1],
              "hidden": rec.prefix.shape[-1], "prompt_tokens": [rec.prefix.shape[0], rec.suffix.shape[0]],
              "decoder_config": rec.decoder.config.to_dict()}
    write_json(out / "config.json", config)
    item_map = Path(run_cfg["data"]["path"]) / "item_map.tsv"
    if item_map.exists():
        shutil.copyfile(item_map, out / "item_map.tsv")


def build_decoder(decoder_config: dict) -> nn.Module:
    from transformers import AutoConfig, AutoModel

    conf = dict(decoder_config)
    model_type = conf.pop("model_type")
    config = AutoConfig.for_model(model_type, **conf)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return AutoModel.from_config(config)


def load_export(path: Path, device: str = "cpu") -> tuple[Recommender, dict]:
    from slmrec_cli.runs import load_weights

    path = Path(path)
    if not (path / "config.json").exists():
        raise SlmrecError(f"{path} is not an slmrec export (no config.json); run `slmrec export` first")
    cfg = read_json(path / "config.json")
    if cfg.get("format") != EXPORT_FORMAT:
        raise SlmrecError(f"{path}/config.json is not an slmrec export config")
    state = load_weights(path / "model.safetensors")
    decoder = build_decoder(cfg["decoder_config"])
    d1, d0 = cfg["hidden"], cfg["id_dim"]
    p, s = cfg["prompt_tokens"]
    rec = Recommender(decoder, torch.zeros(p, d1), torch.zeros(s, d1), nn.Linear(d0, d1), nn.Linear(d1, d0),
                      torch.zeros(cfg["n_items"] + 1, d0), cfg["max_len"])
    try:
        rec.load_state_dict(state)
    except RuntimeError as e:
        raise SlmrecError(f"{path}/model.safetensors does not match its config.json ({str(e).splitlines()[0]}); "
                          "export again") from None
    return rec.to(device).eval(), cfg
