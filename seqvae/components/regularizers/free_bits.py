"""``free-bits``: a per-dimension KL floor (Kingma et al. 2016)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from seqvae.config import ComponentConfig
from seqvae.interfaces import Regularizer

__all__ = ["FreeBits"]


class FreeBits(Regularizer):
    """Each latent dimension's batch-mean KL counts as at least ``threshold`` nats in the loss.

    Dimensions whose batch-mean KL is below the floor contribute the constant ``threshold`` (no
    gradient), so the optimiser stops pushing them to zero. The reported KL is unchanged.
    """

    class Config(ComponentConfig):
        threshold: float = Field(
            0.1, ge=0.0, description="The floor lambda, in nats per latent dimension (batch mean)."
        )

    def transform_kl(self, kl_per_dim: Tensor, step: int) -> Tensor:
        """``b d -> b d`` whose batch mean per dimension is ``max(mean_d, threshold)``."""
        lam = self.config.threshold
        below = kl_per_dim.mean(0, keepdim=True) < lam  # 1 d
        return torch.where(below, torch.full_like(kl_per_dim, lam), kl_per_dim)
