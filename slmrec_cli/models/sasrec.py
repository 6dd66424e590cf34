"""SASRec (Kang & McAuley, 2018): causal self-attention over item ids, scored against the shared id table."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from slmrec_cli.config.models import SASRecConfig
from slmrec_cli.models.scoring import all_scores, next_item_ce


class Block(nn.Module):
    """Pre-norm attention + point-wise feed-forward, as the reference SASRec."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.ff = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(dim, dim))
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(b, t, d)))
        return x + self.drop(self.ff(self.norm2(x)))


class SASRec(nn.Module):
    def __init__(self, cfg: SASRecConfig):
        super().__init__()
        if cfg.dim % cfg.heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by heads {cfg.heads}")
        self.cfg = cfg
        self.item_emb = nn.Embedding(cfg.n_items + 1, cfg.dim, padding_idx=0)
        self.pos_emb = nn.Embedding(cfg.max_len, cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(cfg.dim)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, items: torch.Tensor) -> torch.Tensor:
        """items [B, T] left-padded (0) → hidden states [B, T, dim]; position i sees items ≤ i, never padding."""
        b, t = items.shape
        pos = torch.arange(self.cfg.max_len - t, self.cfg.max_len, device=items.device)
        x = self.item_emb(items) * self.cfg.dim**0.5 + self.pos_emb(pos)[None]
        x = self.drop(x) * (items != 0).unsqueeze(-1)
        # comparisons of positions, not tril/eye of a bool tensor: ONNX Runtime has no bool EyeLike (the ONNX graph of
        # benchmarks/serving_latency.py traces this)
        i = torch.arange(t, device=items.device)
        causal = i[:, None] >= i[None, :]
        keep = causal[None] & (items != 0)[:, None, :]
        keep = keep | (i[:, None] == i[None, :])[None]  # padding rows attend to self
        mask = keep[:, None]
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def item_table(self) -> torch.Tensor:
        return self.item_emb.weight

    def user_vectors(self, items: torch.Tensor) -> torch.Tensor:
        return self.encode(items[:, -self.cfg.max_len :])[:, -1]

    def score_all(self, items: torch.Tensor) -> torch.Tensor:
        return all_scores(self.user_vectors(items), self.item_table())

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Full-softmax cross-entropy over all items at every non-padding position; item scores are computed at those
        positions only (a padding slot's target is 0)."""
        states = self.encode(inputs)
        keep = targets != 0
        return next_item_ce(states[keep], self.item_table(), targets[keep])
