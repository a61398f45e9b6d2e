"""``bag-of-words``: an auxiliary loss that predicts the sentence's words from z (Zhao et al. 2017)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor, nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import Batch, BuildContext, Regularizer, VAEOutput

__all__ = ["BagOfWords"]


class BagOfWords(Regularizer):
    """Adds ``weight * mean_b( -sum_{w in x} log f(z)_w )``: z alone must predict which words occur.

    f is an MLP (one hidden layer of ``hidden`` units with tanh; ``hidden = 0`` for a linear map) onto
    the vocabulary; the word order is ignored, repeated words count each time, and ``<eos>``/padding
    are excluded. Because the decoder cannot help with this loss, z is pushed to carry the sentence's
    content. Logged as the term ``bow``.
    """

    class Config(ComponentConfig):
        weight: float = Field(1.0, ge=0.0, description="Weight of the bag-of-words loss.")
        hidden: int = Field(0, ge=0, description="Hidden units of the predictor; 0 = a linear map from z.")

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        d, v = ctx.latent_dim, ctx.vocab_size
        self.predict = (
            nn.Linear(d, v) if config.hidden == 0
            else nn.Sequential(nn.Linear(d, config.hidden), nn.Tanh(), nn.Linear(config.hidden, v))
        )

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        if not experiment.has_latent:
            return "predicts words from z; the language-model baseline has no z"
        return None

    def bow_nll(self, z: Tensor, batch: Batch) -> Tensor:
        """Per sentence ``b``: -sum over the sentence's words of log softmax(f(z))."""
        log_p = torch.log_softmax(self.predict(z).float(), dim=-1)  # b v
        targets = batch.targets  # b t
        words = batch.mask & (targets != self.ctx.eos_id)
        picked = torch.gather(log_p, 1, targets.clamp_min(0))  # b t
        return -(picked * words).sum(-1)

    def extra_loss(self, out: VAEOutput, batch: Batch, step: int) -> dict[str, Tensor]:
        return {"bow": self.config.weight * self.bow_nll(out.z, batch).mean()}
