"""Recurrent encoders ``lstm`` and ``gru``: q(z|x) = N(mean(x), diag(exp(logvar(x))))."""

from __future__ import annotations

from typing import ClassVar

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, DiagonalGaussian, Encoder
from seqvae.layers import Dropout

__all__ = ["GRUEncoder", "LSTMEncoder", "RNNEncoderConfig"]


class RNNEncoderConfig(ComponentConfig):
    """Config of the recurrent encoders."""

    hidden_size: int | None = Field(None, ge=1, description="Hidden size; None = model.hidden_size.")
    num_layers: int = Field(1, ge=1, le=16, description="Stacked recurrent layers.")
    bidirectional: bool = Field(False, description="Read the sentence in both directions.")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on the input embeddings.")


class _RNNEncoder(Encoder):
    """Embed, run the RNN, map the last layer's state at each sentence's last token to (mean, logvar).

    A one-directional RNN runs over the padded batch (the fused oneDNN / cuDNN kernels) and its output
    at position ``length - 1`` is taken: later padding cannot reach it, so the result does not depend
    on padding. A bidirectional one runs over the packed sentence, so that its backward direction
    starts at each sentence's own last token.
    """

    Config = RNNEncoderConfig
    cell: ClassVar[type[nn.RNNBase]]

    def __init__(self, config: RNNEncoderConfig, ctx: BuildContext):
        super().__init__(config, ctx)
        hidden = config.hidden_size or ctx.hidden_size
        self.directions = 2 if config.bidirectional else 1
        self.embed = nn.Embedding(ctx.vocab_size, ctx.embed_dim, padding_idx=ctx.pad_id)
        self.dropout = Dropout(config.dropout)
        self.rnn = self.cell(
            ctx.embed_dim, hidden, num_layers=config.num_layers, batch_first=True,
            bidirectional=config.bidirectional,
        )
        self.to_params = nn.Linear(hidden * self.directions, 2 * ctx.latent_dim)

    def forward(self, tokens: Tensor, lengths: Tensor) -> DiagonalGaussian:
        """Encode ``tokens: b t`` (``lengths: b`` real tokens each) into a posterior over ``b d``."""
        return self.forward_embeddings(self.embed(tokens), lengths)

    def forward_embeddings(self, embeddings: Tensor, lengths: Tensor) -> DiagonalGaussian:
        """Encode ``embeddings: b t e`` directly (the VampPrior's pseudo-inputs)."""
        x = self.dropout(embeddings)  # b t e
        if self.directions == 1:
            out, _ = self.rnn(x)  # b t h
            index = (lengths.to(out.device) - 1).clamp(min=0)  # b
            last = out[torch.arange(out.shape[0], device=out.device), index]  # b h
        else:
            packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
            _, state = self.rnn(packed)
            h_n = state[0] if isinstance(state, tuple) else state  # (l dir) b h
            last = rearrange(h_n, "(l dir) b h -> l b (dir h)", dir=self.directions)[-1]  # b (dir h)
        # float32 under autocast too: log q(z|x), the KL and IW-NLL's weights need its precision
        mean, logvar = self.to_params(last).float().chunk(2, dim=-1)  # b d, b d
        return DiagonalGaussian(mean, logvar)


class LSTMEncoder(_RNNEncoder):
    """LSTM encoder (registry name ``lstm``)."""

    cell = nn.LSTM


class GRUEncoder(_RNNEncoder):
    """GRU encoder (registry name ``gru``)."""

    cell = nn.GRU
