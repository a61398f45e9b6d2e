"""``none``: no encoder, for the language-model baseline (pairs with prior ``none``).

With encoder and prior ``none`` the composer builds every component with ``latent_dim = 0``: the
decoder gets an empty ``z: b 0``, the KL is 0, and -ELBO, IW-NLL and the exact NLL coincide. This
puts an RNN language model in the same harness, so "does the latent help?" is one grid row.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seqvae.config import ComponentConfig
from seqvae.interfaces import DiagonalGaussian, Encoder

__all__ = ["NoEncoder"]


class NoEncoder(Encoder):
    """Returns an empty posterior (``mean, logvar: b 0``)."""

    class Config(ComponentConfig):
        """No parameters."""

    has_latent = False

    def forward(self, tokens: Tensor, lengths: Tensor) -> DiagonalGaussian:
        """An empty posterior ``b 0`` on the device of ``tokens``."""
        empty = torch.zeros((tokens.shape[0], 0), device=tokens.device)
        return DiagonalGaussian(empty, empty)
