"""The E4SRec-style LLM recommender (SLMRec Section 3): id table → up-projection → spliced into a prompt →
truncated decoder (LoRA) → last-token state after the final norm → down-projection → scores over every item."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from slmrec_cli.config.models import LLMRecConfig
from slmrec_cli.errors import SlmrecError
from slmrec_cli.models.packing import pack_layout
from slmrec_cli.models.scoring import all_scores, next_item_ce


def add_lora(decoder: nn.Module, cfg: LLMRecConfig) -> nn.Module:
    from peft import LoraConfig, get_peft_model

    present = {name.rsplit(".", 1)[-1] for name, _ in decoder.named_modules()}
    missing = [t for t in cfg.lora_targets if t not in present]
    if missing:
        raise SlmrecError(f"--lora-targets {missing[0]} is not a module of this base model; "
                          f"choose among e.g. q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj")
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                      target_modules=list(cfg.lora_targets), bias="none")
    with warnings.catch_warnings():  # peft calls a transformers API that warns about its own rename
        warnings.simplefilter("ignore", FutureWarning)
        return get_peft_model(decoder, lora)


def splice(prefix: torch.Tensor, hist: torch.Tensor, suffix: torch.Tensor, items: torch.Tensor):
    """[prefix | history | suffix] with the history's left padding moved to the far left, so the last position is
    always the response cue and positions (cumsum of the mask) never depend on the amount of padding.
    prefix [P, d], hist [B, T, d], suffix [S, d], items [B, T] left-padded with 0 → (embeds, mask, positions).
    Pure gathers and arithmetic, so it exports to ONNX unchanged."""
    b, t = items.shape
    p_len = prefix.shape[0]
    x = torch.cat([prefix.expand(b, -1, -1), hist, suffix.expand(b, -1, -1)], dim=1)
    pads = (items == 0).sum(1, keepdim=True)  # [B, 1]
    j = torch.arange(x.shape[1], device=items.device).unsqueeze(0)
    order = torch.where(j < pads, p_len + j, torch.where(j < pads + p_len, j - pads, j))
    x = x.gather(1, order.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    mask = (j >= pads).long()
    pos = (j - pads).clamp(min=0)
    return x, mask, pos


class LLMRec(nn.Module):
    """`decoder` is the (optionally peft-wrapped) inner decoder with .embed_tokens/.layers/.norm semantics."""

    def __init__(self, cfg: LLMRecConfig, decoder: nn.Module, tokenizer, id_table: torch.Tensor):
        super().__init__()
        self.cfg = cfg
        self.decoder = decoder
        table = id_table.detach().float().clone()
        if cfg.train_ids:  # trained (fp32, as the projections); saved in the run with them (models.build)
            self.id_table = nn.Parameter(table)
        else:
            self.register_buffer("id_table", table, persistent=False)
        self.up = nn.Linear(cfg.id_dim, cfg.hidden)  # d0 → d1
        self.down = nn.Linear(cfg.hidden, cfg.id_dim)  # d1 → d0
        prefix, suffix = cfg.prompt_parts()
        pre = tokenizer(prefix, add_special_tokens=False)["input_ids"]
        bos = getattr(tokenizer, "bos_token_id", None)
        pre = ([bos] if bos is not None else []) + list(pre)
        suf = list(tokenizer(suffix, add_special_tokens=False)["input_ids"])
        self.register_buffer("prefix_ids", torch.tensor(pre, dtype=torch.long), persistent=False)
        self.register_buffer("suffix_ids", torch.tensor(suf, dtype=torch.long), persistent=False)
        self.packed = True  # the decoder sees real tokens only (hidden); False: the left-padded batch

    # -- the inner pieces of the base model, whether or not peft wraps it
    def _base(self) -> nn.Module:
        d = self.decoder
        return d.get_base_model() if hasattr(d, "get_base_model") else d

    def inputs(self, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """items [B, T] left-padded → (inputs_embeds, attention_mask, position_ids) of the whole prompt."""
        items = items[:, -self.cfg.max_len :]
        embed = self._base().get_input_embeddings()
        dtype = embed.weight.dtype
        hist = self.up(self.id_table[items].to(self.up.weight.dtype)).to(dtype)
        return splice(embed(self.prefix_ids).to(dtype), hist, embed(self.suffix_ids).to(dtype), items)

    def hidden(self, items: torch.Tensor, all_layers: bool = False, positions: str = "last"):
        """States after the final norm. positions="last": the last token's [B, d1]; "history": every history slot's
        [B, T, d1], slot i holding the state that reads items[:, :i + 1] (causal attention; slots of left padding hold
        a state nobody reads). With all_layers, also every decoder layer's output at the same positions, before the
        final norm, [L, B, d1] or [L, B, T, d1] (read by hooks: unambiguous across versions). The decoder runs on the
        real tokens only (models.packing; self.packed = False: on the left-padded batch, the same states)."""
        items = items[:, -self.cfg.max_len :]
        if self.packed:
            x, pos, take = self._packed(items, positions)
            mask = None  # transformers reads the packing from the position ids
        else:
            x, mask, pos = self.inputs(items)
            p_len = self.prefix_ids.shape[0]
            cut = slice(p_len, p_len + items.shape[1]) if positions == "history" else -1  # items[:, i] at p_len + i

            def take(states: torch.Tensor) -> torch.Tensor:
                return states[:, cut]
        captured: list[torch.Tensor] = []
        hooks = []
        if all_layers:
            def grab(module, args, output):
                captured.append(take(output[0] if isinstance(output, tuple) else output))

            hooks = [layer.register_forward_hook(grab) for layer in self._base().layers]
        try:
            out = self.decoder(inputs_embeds=x, attention_mask=mask, position_ids=pos, use_cache=False)
        finally:
            for h in hooks:
                h.remove()
        final = take(out.last_hidden_state)
        return (final, torch.stack(captured)) if all_layers else final

    def _packed(self, items: torch.Tensor, positions: str):
        """(packed embeddings [R, cap, d1], position ids [R, cap], take: packed states → [B, d1] or [B, T, d1])."""
        embed = self._base().get_input_embeddings()
        dtype = embed.weight.dtype
        b, t = items.shape
        hist = self.up(self.id_table[items].to(self.up.weight.dtype)).to(dtype)
        prefix, suffix = embed(self.prefix_ids).to(dtype), embed(self.suffix_ids).to(dtype)
        table = torch.cat([prefix.expand(b, -1, -1), hist, suffix.expand(b, -1, -1)], dim=1)
        lengths = (items != 0).sum(1).tolist()  # the one host read: the layout is planned on the CPU
        layout = pack_layout(lengths, t, prefix.shape[0], suffix.shape[0]).to(items.device)
        x = table.reshape(-1, table.shape[-1])[layout.src]
        index = layout.history if positions == "history" else layout.last

        def take(states: torch.Tensor) -> torch.Tensor:
            return states.reshape(-1, states.shape[-1])[index]

        return x, layout.pos, take

    @property
    def compute_dtype(self) -> torch.dtype:
        """The dtype the decoder computes in outside autocast: its token embeddings' (the base's load dtype, also under
        8/4-bit quantization), which inputs() casts the history to."""
        return self._base().get_input_embeddings().weight.dtype

    def final_norm(self) -> nn.Module:
        return self._base().norm

    def user_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.down(self.hidden(items).to(self.down.weight.dtype))

    def score_all(self, items: torch.Tensor) -> torch.Tensor:
        return all_scores(self.user_vectors(items), self.id_table)

    def forward(self, items: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy of the next item (paper Eq. 1); column 0 (padding) is never a class.
        targets [B]: the last token predicts it. targets [B, T] (causal): slot i of items predicts targets[:, i],
        every real slot from one forward, each weighted equally; a 0 target (padding) never enters the loss."""
        if targets.ndim == 1:
            return next_item_ce(self.user_vectors(items), self.id_table, targets)
        states = self.hidden(items, positions="history")
        targets = targets[:, -states.shape[1] :]
        keep = targets != 0
        return next_item_ce(self.down(states[keep].to(self.down.weight.dtype)), self.id_table, targets[keep])
