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

    The normalisation divides by the batch standard deviation itself, not by ``sqrt(var + eps)``
    as ``torch.nn.BatchNorm1d`` does. With the additive eps the floor has a way out: the normalised
    means' variance is gamma^2 * var / (var + eps), so the KL pulls the encoder's spread of means
    below eps. The pull is tiny, but Adam rescales it to full-size steps, and the KL escapes the
    floor within a few dozen steps (measured on PTB: docs/concepts/remedies.md). Without eps the
    normalised means are exactly invariant to the encoder's scale, so nothing pulls it down (a
    variance below 1e-12 is clamped, only to avoid a division by zero).
    """

    #: the smallest batch (or running) variance divided by; see the class docstring
    MIN_VAR = 1e-12

    class Config(ComponentConfig):
        gamma: float = Field(0.5, gt=0.0, description="The fixed BatchNorm scale (Zhu et al.: 0.5-0.7).")
        momentum: float = Field(0.1, gt=0.0, le=1.0, description="Momentum of the running statistics.")

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        # holds gamma, the learned shift and the running statistics under BatchNorm's names (its
        # forward, with the additive eps, is not used: see the class docstring)
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
        mean = posterior.mean.float()  # the statistics in float32, as BatchNorm under bf16 autocast
        if self.training and mean.shape[0] >= 2:
            centre, var = mean.mean(0), mean.var(0, unbiased=False)
            self._track(centre.detach(), mean.detach().var(0, unbiased=True))
        else:  # evaluation, or a training batch of one, which has no batch variance
            centre, var = self.norm.running_mean, self.norm.running_var
        scale = self.norm.weight * torch.rsqrt(var.clamp_min(self.MIN_VAR))
        return DiagonalGaussian((mean - centre) * scale + self.norm.bias, posterior.logvar)

    @torch.no_grad()
    def _track(self, centre: torch.Tensor, var: torch.Tensor) -> None:
        """Update the running statistics as BatchNorm does (unbiased variance, ``momentum``)."""
        n = self.norm
        n.running_mean.lerp_(centre, self.config.momentum)
        n.running_var.lerp_(var, self.config.momentum)
        n.num_batches_tracked += 1
