"""``free-bits``: a KL floor below which the optimiser stops pushing the KL down (Kingma et al. 2016; Li et al. 2019).

Four variants differ in where the floor applies (Li et al. 2019 distinguish them in their code):

* ``dimension-batch`` (default; Kingma et al.'s free bits with one group per dimension): each
  dimension's batch-mean KL counts as at least ``threshold``.
* ``dimension`` (Li et al.'s ``fb=2``): each dimension of each sentence counts as at least ``threshold``.
* ``sentence`` (Li et al.'s ``fb=1``): each sentence's total KL counts as at least ``threshold * d``.
* ``batch`` (Li et al.'s ``fb=3``): the batch-mean total KL counts as at least ``threshold * d``.

Where the KL is below the floor it is replaced by the constant floor (no gradient), so the loss is
``rec + beta * max(floor, KL)`` in the chosen grouping. The reported KL is never changed.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor

from seqvae.config import ComponentConfig
from seqvae.interfaces import Regularizer

__all__ = ["FreeBits"]

_PER_DIMENSION = ("dimension-batch", "dimension")


class FreeBits(Regularizer):
    """KL floor of ``threshold`` nats per latent dimension (``threshold * d`` for sentence/batch modes)."""

    class Config(ComponentConfig):
        threshold: float = Field(
            0.1, ge=0.0, description="The floor lambda in nats per latent dimension; sentence and batch modes "
            "use lambda * d for the total.",
        )
        mode: Literal["dimension-batch", "dimension", "sentence", "batch"] = Field(
            "dimension-batch", description="Where the floor applies (see the module docs).",
        )

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        prior = experiment.component_class("prior")
        if config.mode in _PER_DIMENSION and not getattr(prior, "factorized", True):  # type: ignore[attr-defined]
            return (f"mode '{config.mode}' needs a KL per dimension, but prior '{experiment.prior.kind}' has "
                    "only a total KL; use mode 'sentence' or 'batch'")
        return None

    def transform_kl(self, kl_per_dim: Tensor, step: int) -> Tensor:
        """``b d -> b d``: the KL where it is above the floor, the constant floor where it is not."""
        lam = self.config.threshold
        mode = self.config.mode
        if mode == "dimension-batch":
            below = kl_per_dim.mean(0, keepdim=True) < lam  # 1 d
        elif mode == "dimension":
            below = kl_per_dim < lam  # b d
        elif mode == "sentence":
            below = kl_per_dim.sum(-1, keepdim=True) < lam * kl_per_dim.shape[-1]  # b 1
        else:
            below = kl_per_dim.sum(-1).mean() < lam * kl_per_dim.shape[-1]  # scalar
        return torch.where(below, torch.full_like(kl_per_dim, lam), kl_per_dim)
