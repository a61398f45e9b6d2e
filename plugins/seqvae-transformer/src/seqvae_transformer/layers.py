"""Attention blocks shared by the encoder and the decoder (pre-LayerNorm, multi-head)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

__all__ = ["Attention", "FeedForward", "heads_for", "sinusoidal_positions", "width_problem"]


def heads_for(dim: int, heads: int | None) -> int:
    """``heads``, or when None the largest of 8, 4, 2, 1 that divides ``dim``."""
    return heads if heads is not None else next(h for h in (8, 4, 2, 1) if dim % h == 0)


def width_problem(config, experiment) -> str | None:
    """The config-time check shared by encoder and decoder: ``n_heads`` must divide ``d_model``."""
    dim = config.d_model or experiment.model.hidden_size
    if config.n_heads is not None and dim % config.n_heads:
        return f"d_model {dim} is not divisible by n_heads {config.n_heads}"
    return None


def sinusoidal_positions(positions: Tensor, dim: int) -> Tensor:
    """Sinusoidal position codes (Vaswani et al. 2017): ``positions: t -> t dim``."""
    half = dim // 2
    freq = torch.exp(-math.log(10_000.0) * torch.arange(half, device=positions.device) / max(half, 1))
    angles = positions.float()[:, None] * freq[None, :]  # t half
    codes = torch.cat([angles.sin(), angles.cos()], dim=-1)  # t (2 half)
    return F.pad(codes, (0, dim - 2 * half))  # t dim


class Attention(nn.Module):
    """Multi-head attention of queries ``b t e`` over keys/values ``b s e``.

    ``mask`` (``b t s`` or broadcastable, True = may attend) is passed to
    ``scaled_dot_product_attention``. :meth:`project_kv` exposes the key/value projection so a
    decoder can cache it.
    """

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"model dimension {dim} is not divisible by {heads} heads")
        self.heads, self.dropout = heads, dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def project_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Keys and values ``b h s k`` of ``x: b s e``."""
        k, v = self.kv(x).chunk(2, dim=-1)
        return (rearrange(k, "b s (h k) -> b h s k", h=self.heads), rearrange(v, "b s (h k) -> b h s k", h=self.heads))

    def attend(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
        """Queries from ``x: b t e`` over cached ``k, v: b h s k``; returns ``b t e``."""
        q = rearrange(self.q(x), "b t (h k) -> b h t k", h=self.heads)
        p = self.dropout if self.training else 0.0
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # b h t k
        return self.out(rearrange(y, "b h t k -> b t (h k)"))

    def forward(self, x: Tensor, context: Tensor, mask: Tensor | None = None) -> Tensor:
        k, v = self.project_kv(context)
        return self.attend(x, k, v, mask)


class FeedForward(nn.Sequential):
    """Position-wise ``e -> mult*e -> e`` with GELU and dropout."""

    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__(nn.Linear(dim, mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mult * dim, dim))
