"""The standard normal prior ``gaussian`` with the analytic KL of a diagonal Gaussian posterior."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from seqvae.config import ComponentConfig
from seqvae.interfaces import KL, BuildContext, DiagonalGaussian, Prior

__all__ = ["GaussianPrior"]


class GaussianPrior(Prior):
    """p(z) = N(0, I). KL(N(m, s^2) || N(0, 1)) = 0.5 (m^2 + s^2 - log s^2 - 1) per dimension."""

    class Config(ComponentConfig):
        """The standard normal prior has no parameters."""

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)

    def log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, I) summed over the last axis: ``... d -> ...``."""
        return (-0.5 * (math.log(2 * math.pi) + z**2)).sum(-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n d`` samples."""
        anchor = self._device_anchor
        return torch.randn((n, self.ctx.latent_dim), generator=generator, device=anchor.device)

    def kl(self, posterior: DiagonalGaussian, generator: torch.Generator | None = None) -> KL:
        """Analytic KL per dimension, ``b d``."""
        m, lv = posterior.mean, posterior.logvar
        return KL(0.5 * (m**2 + lv.exp() - lv - 1), analytic=True)
