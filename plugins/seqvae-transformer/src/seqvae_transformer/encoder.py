"""``transformer`` encoder: q(z|x) from a bidirectional Transformer over the sentence."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, DiagonalGaussian, Encoder

from seqvae_transformer.layers import Attention, FeedForward, heads_for, sinusoidal_positions, width_problem

__all__ = ["TransformerEncoder"]


class _Layer(nn.Module):
    def __init__(self, dim: int, heads: int, mult: int, dropout: float):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn, self.ff = Attention(dim, heads, dropout), FeedForward(dim, mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.norm1(x)
        x = x + self.drop(self.attn(h, h, mask))
        return x + self.drop(self.ff(self.norm2(x)))


class TransformerEncoder(Encoder):
    """Embed + sinusoidal positions, pre-LN self-attention layers (padding masked), mean-pool, -> (mean, logvar).

    Padding never enters: keys at padded positions are masked and the pool averages real positions only.
    """

    class Config(ComponentConfig):
        d_model: int | None = Field(None, ge=8, description="Model width; None = model.hidden_size.")
        n_heads: int | None = Field(
            None, ge=1, description="Attention heads (must divide d_model); None = the largest of 8, 4, 2, 1 that does."
        )
        n_layers: int = Field(2, ge=1, le=48, description="Self-attention layers.")
        ff_mult: int = Field(4, ge=1, description="Feed-forward width as a multiple of d_model.")
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout in attention, feed-forward and embeddings.")

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        return width_problem(config, experiment)

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        dim = config.d_model or ctx.hidden_size
        heads = heads_for(dim, config.n_heads)
        self.dim = dim
        self.embed = nn.Embedding(ctx.vocab_size, ctx.embed_dim, padding_idx=ctx.pad_id)
        self.inp = nn.Linear(ctx.embed_dim, dim)
        self.drop = nn.Dropout(config.dropout)
        self.layers = nn.ModuleList(_Layer(dim, heads, config.ff_mult, config.dropout)
                                    for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(dim)
        self.to_params = nn.Linear(dim, 2 * ctx.latent_dim)

    def forward(self, tokens: Tensor, lengths: Tensor) -> DiagonalGaussian:
        """``tokens: b t``, ``lengths: b`` -> posterior over ``b d``."""
        return self.forward_embeddings(self.embed(tokens), lengths)

    def forward_embeddings(self, embeddings: Tensor, lengths: Tensor) -> DiagonalGaussian:
        """``embeddings: b t e`` (e = embed_dim) -> posterior over ``b d``."""
        b, t, _ = embeddings.shape
        real = torch.arange(t, device=embeddings.device)[None, :] < lengths.to(embeddings.device)[:, None]  # b t
        pos = sinusoidal_positions(torch.arange(t, device=embeddings.device), self.dim)  # t e
        x = self.drop(self.inp(embeddings) + pos[None])  # b t e
        mask = real[:, None, None, :]  # b 1 1 t: every query may attend to the real keys only
        for layer in self.layers:
            x = layer(x, mask)
        x = self.norm(x) * real[..., None]  # b t e, padding zeroed
        pooled = x.sum(1) / lengths.to(x.device).clamp_min(1)[:, None].to(x.dtype)  # b e
        mean, logvar = self.to_params(pooled).chunk(2, dim=-1)  # b d, b d
        return DiagonalGaussian(mean, logvar)
