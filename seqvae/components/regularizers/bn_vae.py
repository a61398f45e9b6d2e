"""``bn-vae``: batch normalisation of the posterior mean with a fixed scale (Zhu et al. 2020)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, DiagonalGaussian, Posterior, Regularizer

__all__ = ["BNVAE"]


class BNVAE(Regularizer):
    """Replace the posterior mean by BatchNorm(mean) with scale fixed at ``gamma`` and a learned shift.

    Over a batch each dimension's means then have variance gamma^2, and since KL_d >= mean_d^2 / 2,
    the expected KL is at least d * gamma^2 / 2 (4 nats for d = 32, gamma = 0.5): a floor the
    optimiser cannot remove. Training uses batch statistics; evaluation the running ones.
    """

    class Config(ComponentConfig):
        gamma: float = Field(0.5, gt=0.0, description="The fixed BatchNorm scale (Zhu et al.: 0.5-0.7).")
        momentum: float = Field(0.1, gt=0.0, le=1.0, description="Momentum of the running statistics.")

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        self.norm = nn.BatchNorm1d(ctx.latent_dim, momentum=config.momentum)
        nn.init.constant_(self.norm.weight, config.gamma)
        self.norm.weight.requires_grad_(False)

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        if not experiment.has_latent:
            return "needs a latent variable (the language-model baseline has none)"
        return None

    @property
    def kl_floor(self) -> float:
        """The lower bound d * gamma^2 / 2 on the expected KL with a standard normal prior."""
        return self.ctx.latent_dim * self.config.gamma**2 / 2

    def transform_posterior(self, posterior: Posterior, step: int) -> Posterior:
        if not isinstance(posterior, DiagonalGaussian):
            raise TypeError("bn-vae normalises a Gaussian posterior's mean; the encoder returned "
                            f"{type(posterior).__name__}")
        if self.training and posterior.mean.shape[0] < 2:
            return DiagonalGaussian(self._eval_norm(posterior.mean), posterior.logvar)
        return DiagonalGaussian(self.norm(posterior.mean), posterior.logvar)

    def _eval_norm(self, mean: torch.Tensor) -> torch.Tensor:
        """Running-statistics normalisation (a batch of one has no batch variance)."""
        n = self.norm
        return (mean - n.running_mean) / torch.sqrt(n.running_var + n.eps) * n.weight + n.bias
