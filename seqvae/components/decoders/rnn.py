"""Recurrent decoders ``lstm`` and ``gru``: autoregressive p(x|z) with a configurable z injection."""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from einops import rearrange, repeat
from pydantic import Field
from torch import Tensor, nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, Decoder
from seqvae.layers import Dropout

__all__ = ["GRUDecoder", "LSTMDecoder", "RNNDecoderConfig"]


class RNNDecoderConfig(ComponentConfig):
    """Config of the recurrent decoders."""

    hidden_size: int | None = Field(None, ge=1, description="Hidden size; None = model.hidden_size.")
    num_layers: int = Field(1, ge=1, le=16, description="Stacked recurrent layers.")
    z_injection: Literal["init", "concat", "both"] = Field(
        "both",
        description="How z enters: the initial state (init), concatenated to every input (concat), or both.",
    )
    embed_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on input embeddings.")
    output_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the vocabulary layer.")


class _RNNDecoder(Decoder):
    """An RNN language model conditioned on z.

    With ``init``, the initial cell state is ``c0 = W z`` and the hidden state ``h0 = tanh(c0)``
    (He et al. 2019); with ``concat`` z is appended to every input embedding. With ``latent_dim = 0``
    (the language-model baseline) z does not enter at all, whatever ``z_injection`` says.
    """

    Config = RNNDecoderConfig
    cell: ClassVar[type[nn.RNNBase]]

    def __init__(self, config: RNNDecoderConfig, ctx: BuildContext):
        super().__init__(config, ctx)
        self.hidden = config.hidden_size or ctx.hidden_size
        self.layers = config.num_layers
        has_z = ctx.latent_dim > 0
        self.concat = has_z and config.z_injection in ("concat", "both")
        self.init = has_z and config.z_injection in ("init", "both")
        self.embed = nn.Embedding(ctx.vocab_size, ctx.embed_dim, padding_idx=ctx.pad_id)
        self.embed_dropout = Dropout(config.embed_dropout)
        in_dim = ctx.embed_dim + (ctx.latent_dim if self.concat else 0)
        self.rnn = self.cell(in_dim, self.hidden, num_layers=self.layers, batch_first=True)
        self.z_to_state = nn.Linear(ctx.latent_dim, self.layers * self.hidden) if self.init else None
        self.output_dropout = Dropout(config.output_dropout)
        self.out = nn.Linear(self.hidden, ctx.vocab_size)

    def _embed(self, tokens: Tensor, z: Tensor) -> Tensor:
        x = self.embed_dropout(self.embed(tokens))  # b t e
        if self.concat:
            x = torch.cat([x, repeat(z, "b d -> b t d", t=tokens.shape[1])], dim=-1)  # b t (e+d)
        return x

    def _initial(self, z: Tensor) -> Tensor | tuple[Tensor, Tensor]:
        if self.z_to_state is not None:
            c0 = rearrange(self.z_to_state(z), "b (l h) -> l b h", l=self.layers).contiguous()
        else:
            c0 = z.new_zeros(self.layers, z.shape[0], self.hidden)
        h0 = torch.tanh(c0) if self.z_to_state is not None else c0
        return (h0, c0) if self.cell is nn.LSTM else h0

    def forward(self, inputs: Tensor, z: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forced logits ``b t v`` for ``inputs: b t`` given ``z: b d``."""
        return self.out(self.forward_features(inputs, z, lengths))  # b t v

    def forward_features(self, inputs: Tensor, z: Tensor, lengths: Tensor) -> Tensor:
        """The RNN's outputs ``b t h`` (after the output dropout), before the vocabulary layer."""
        out, _ = self.rnn(self._embed(inputs, z), self._initial(z))  # b t h
        return self.output_dropout(out)

    def output_layer(self) -> nn.Linear:
        """The vocabulary layer ``h -> v``."""
        return self.out

    def init_state(self, z: Tensor) -> dict[str, Any]:
        """Decoding state before the first token."""
        return {"z": z, "rnn": self._initial(z)}

    def step(self, token: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Logits ``b v`` for the next position after feeding ``token: b``."""
        out, rnn_state = self.rnn(self._embed(token[:, None], state["z"]), state["rnn"])  # b 1 h
        logits = self.out(self.output_dropout(out[:, 0]))  # b v
        return logits, {"z": state["z"], "rnn": rnn_state}

    def reorder_state(self, state: dict[str, Any], index: Tensor) -> dict[str, Any]:
        """Rows ``index`` of the state (the RNN state is ``l b h``: batch on dim 1)."""
        rnn = state["rnn"]
        rnn = tuple(s.index_select(1, index) for s in rnn) if isinstance(rnn, tuple) else rnn.index_select(1, index)
        return {"z": state["z"].index_select(0, index), "rnn": rnn}


class LSTMDecoder(_RNNDecoder):
    """LSTM decoder (registry name ``lstm``)."""

    cell = nn.LSTM


class GRUDecoder(_RNNDecoder):
    """GRU decoder (registry name ``gru``)."""

    cell = nn.GRU
