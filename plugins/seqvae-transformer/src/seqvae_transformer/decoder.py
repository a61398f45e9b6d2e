"""``transformer`` decoder: causal self-attention, cross-attention to z, cached keys/values for ``step()``."""

from __future__ import annotations

from typing import Any

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, Decoder

from seqvae_transformer.layers import Attention, FeedForward, heads_for, sinusoidal_positions, width_problem

__all__ = ["TransformerDecoder"]


class _Layer(nn.Module):
    """Pre-LN: causal self-attention, cross-attention to the z memory (when there is a latent), feed-forward."""

    def __init__(self, dim: int, heads: int, mult: int, dropout: float, cross: bool):
        super().__init__()
        self.norm_self, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn, self.ff = Attention(dim, heads, dropout), FeedForward(dim, mult, dropout)
        self.cross = Attention(dim, heads, dropout) if cross else None
        self.norm_cross = nn.LayerNorm(dim) if cross else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, memory_kv: tuple[Tensor, Tensor] | None
                ) -> Tensor:
        """``x: b t e`` (already normed keys/values ``k, v`` of the self-attention given)."""
        x = x + self.drop(self.self_attn.attend(self.norm_self(x), k, v, mask))
        if self.cross is not None and memory_kv is not None:
            x = x + self.drop(self.cross.attend(self.norm_cross(x), *memory_kv, None))
        return x + self.drop(self.ff(self.norm_ff(x)))


class TransformerDecoder(Decoder):
    """A causal Transformer p(x|z): z becomes ``n_memory`` vectors that every layer cross-attends to.

    ``step()`` keeps each layer's self-attention keys and values (``b h s k``) and the memory's, so
    generating a token costs one position. Positions are sinusoidal: no maximum length.
    """

    class Config(ComponentConfig):
        d_model: int | None = Field(None, ge=8, description="Model width; None = model.hidden_size.")
        n_heads: int | None = Field(
            None, ge=1, description="Attention heads (must divide d_model); None = the largest of 8, 4, 2, 1 that does."
        )
        n_layers: int = Field(2, ge=1, le=48, description="Decoder layers.")
        ff_mult: int = Field(4, ge=1, description="Feed-forward width as a multiple of d_model.")
        n_memory: int = Field(
            4, ge=2, le=64, description="Memory vectors made from z (at least 2: over one vector the attention "
            "weights would be constant and the queries would learn nothing).",
        )
        dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout in attention, feed-forward and embeddings.")

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        return width_problem(config, experiment)

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        dim = config.d_model or ctx.hidden_size
        heads = heads_for(dim, config.n_heads)
        self.dim, self.has_z = dim, ctx.latent_dim > 0
        self.embed = nn.Embedding(ctx.vocab_size, ctx.embed_dim, padding_idx=ctx.pad_id)
        self.inp = nn.Linear(ctx.embed_dim, dim)
        self.drop = nn.Dropout(config.dropout)
        self.memory = nn.Linear(ctx.latent_dim, config.n_memory * dim) if self.has_z else None
        self.layers = nn.ModuleList(_Layer(dim, heads, config.ff_mult, config.dropout, self.has_z)
                                    for _ in range(config.n_layers))
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, ctx.vocab_size)

    def _memory(self, z: Tensor) -> Tensor | None:
        if self.memory is None:
            return None
        return rearrange(self.memory(z), "b (m e) -> b m e", e=self.dim)  # b m e

    def _inputs(self, tokens: Tensor, start: int) -> Tensor:
        pos = sinusoidal_positions(torch.arange(start, start + tokens.shape[1], device=tokens.device), self.dim)
        return self.drop(self.inp(self.embed(tokens)) + pos[None])  # b t e

    def forward(self, inputs: Tensor, z: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forced logits ``b t v`` for ``inputs: b t`` given ``z: b d``."""
        t = inputs.shape[1]
        x = self._inputs(inputs, 0)
        memory = self._memory(z)
        causal = torch.ones(t, t, dtype=torch.bool, device=inputs.device).tril()  # t t: True = may attend
        for layer in self.layers:
            k, v = layer.self_attn.project_kv(layer.norm_self(x))
            mem_kv = layer.cross.project_kv(memory) if layer.cross is not None and memory is not None else None
            x = layer(x, k, v, causal, mem_kv)
        return self.out(self.norm(x))

    def init_state(self, z: Tensor) -> dict[str, Any]:
        """Empty key/value caches and the memory's keys/values per layer."""
        memory = self._memory(z)
        mem = [layer.cross.project_kv(memory) if layer.cross is not None and memory is not None else None
               for layer in self.layers]
        return {"pos": 0, "cache": [None] * len(self.layers), "memory": mem}

    def step(self, token: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Logits ``b v`` after feeding ``token: b`` at the next position."""
        x = self._inputs(token[:, None], state["pos"])  # b 1 e
        caches = []
        for layer, cache, mem_kv in zip(self.layers, state["cache"], state["memory"]):
            k, v = layer.self_attn.project_kv(layer.norm_self(x))  # b h 1 k
            if cache is not None:
                k, v = torch.cat([cache[0], k], dim=2), torch.cat([cache[1], v], dim=2)
            caches.append((k, v))
            x = layer(x, k, v, None, mem_kv)  # the one query may see every cached position
        return self.out(self.norm(x[:, 0])), {"pos": state["pos"] + 1, "cache": caches, "memory": state["memory"]}

    def reorder_state(self, state: dict[str, Any], index: Tensor) -> dict[str, Any]:
        """Rows ``index`` of the caches (batch is dim 0 of every cached tensor)."""
        def pick(kv: tuple[Tensor, Tensor] | None) -> tuple[Tensor, Tensor] | None:
            return None if kv is None else (kv[0].index_select(0, index), kv[1].index_select(0, index))

        return {"pos": state["pos"], "cache": [pick(c) for c in state["cache"]],
                "memory": [pick(m) for m in state["memory"]]}
