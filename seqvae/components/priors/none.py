"""``none``: no prior, for the language-model baseline (pairs with encoder ``none``; see there)."""

from __future__ import annotations

import torch
from torch import Tensor

from seqvae.config import ComponentConfig
from seqvae.interfaces import KL, BuildContext, DiagonalGaussian, Prior

__all__ = ["NoPrior"]


class NoPrior(Prior):
    """The prior of a model without latent: ``z`` has 0 dimensions, so every term is 0."""

    class Config(ComponentConfig):
        """No parameters."""

    has_latent = False

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """0 for every (empty) ``z``: ``... d -> ...``."""
        return z.sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n 0``."""
        return torch.zeros((n, 0), device=self._device_anchor.device)

    def kl(self, posterior: DiagonalGaussian, generator: torch.Generator | None = None) -> KL:
        """``b 0``: no dimensions, so no KL."""
        return KL(posterior.mean[..., :0], analytic=True)
