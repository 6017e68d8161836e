"""A small causal decoder-only Transformer (pre-LayerNorm, scaled_dot_product_attention) for the same tasks."""

from __future__ import annotations

import math
import typing

import torch
import torch.nn.functional as F
from torch import nn

from .base import SequenceModel, encoder

if typing.TYPE_CHECKING:
    from .configs import TransformerConfig


class Block(nn.Module):
    def __init__(self, d: int, heads: int, ff: int, rope: bool = False):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, ff), nn.GELU(), nn.Linear(ff, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)
        q, k, v = (z.view(B, L, self.heads, D // self.heads).transpose(1, 2) for z in (q, k, v))  # (B, nh, L, hd)
        if self.rope:
            q, k = rotary(q), rotary(k)
        a = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, L, D)
        x = x + self.proj(a)
        return x + self.mlp(self.ln2(x))


class Transformer(SequenceModel):
    def __init__(self, cfg: TransformerConfig, task):
        super().__init__()
        L, d = task.seq_len, cfg.d_model
        self.encoder = _Encoder(encoder(task, d), cfg.max_len or L, d, cfg.pos_encoding)
        rope = cfg.pos_encoding == "rope"
        self.blocks = nn.ModuleList(Block(d, cfg.heads, cfg.ff_mult * d, rope) for _ in range(cfg.layers))
        self.ln_f = nn.LayerNorm(d)
        self.head = nn.Linear(d, task.output_size)
        self.kernel_path = "torch.nn.functional.scaled_dot_product_attention"

    def body(self, e: torch.Tensor, probes: list[torch.Tensor] | None = None) -> torch.Tensor:
        for block in self.blocks:
            e = block(e)
        return self.ln_f(e)

    def group_of(self, name: str) -> str:
        if name.startswith("encoder."):
            return "embedding"
        if name.startswith("head."):
            return "head"
        if ".ln" in name or name.startswith("ln_f"):
            return "norm"
        return "attention" if (".qkv." in name or ".proj." in name) else "mlp"


class _Encoder(nn.Module):
    """Token embedding (or linear input) plus an additive positional encoding (sinusoidal, learned): x_t is the sum,
    the input to the first block. With rope (applied in every block) or none, x_t is the embedding alone."""

    def __init__(self, inp: nn.Module, max_len: int, d: int, kind: str):
        super().__init__()
        self.inp, self.kind = inp, kind
        if kind == "learned":
            self.pos = nn.Parameter(torch.randn(max_len, d) * 0.02)
        elif kind == "sinusoidal":
            self.register_buffer("pos", sinusoidal(max_len, d), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = self.inp(x)  # (B, L, d)
        if self.kind in ("rope", "none"):
            return e
        L = e.shape[1]
        pos = self.pos
        if L > len(pos):
            if self.kind == "learned":  # the config refuses such lengths; a direct caller gets a clear error
                raise ValueError(f"a sequence of {L} steps is longer than the learned positional encoding "
                                 f"({len(pos)} positions; model.max_len)")
            # the sinusoidal table extends: its first rows are the same numbers, whatever its length
            pos = sinusoidal(L, e.shape[2]).to(e.device)
        return e + pos[:L].to(e.dtype)


def rotary(x: torch.Tensor, base: float = 10000.0) -> torch.Tensor:
    """Rotary position embedding (Su et al. 2021, RoFormer), in its original interleaved form: in each head, the
    pair of dimensions (2i, 2i+1) of position m is rotated by the angle m·θ_i, θ_i = base^(-2i/hd). x (B, nh, L, hd),
    hd even. A query at m and a key at n then meet through their relative position m - n alone. The angles are
    computed in float64 and the rotation in x's dtype."""
    L, hd = x.shape[-2], x.shape[-1]
    theta = base ** (-torch.arange(0, hd, 2, dtype=torch.float64, device=x.device) / hd)  # (hd/2,)
    angle = torch.arange(L, dtype=torch.float64, device=x.device)[:, None] * theta  # (L, hd/2)
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def sinusoidal(length: int, d: int) -> torch.Tensor:
    """The fixed sin/cos table of Vaswani et al. 2017: (length, d)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = torch.exp(-math.log(10000.0) * torch.arange(0, d, 2, dtype=torch.float64) / d)
    table = torch.zeros(length, d, dtype=torch.float64)
    table[:, 0::2] = torch.sin(pos * freq)
    table[:, 1::2] = torch.cos(pos * freq[: d // 2])
    return table.float()
