"""``word-dropout`` and ``historyless``: weaken the decoder by hiding its previous words (Bowman et al.)."""

from __future__ import annotations

from typing import Any

import torch
from pydantic import Field
from torch import Tensor

from seqvae.config import ComponentConfig
from seqvae.interfaces import Regularizer

__all__ = ["Historyless", "WordDropout"]


class WordDropout(Regularizer):
    """Replace each decoder-input word by ``<unk>`` with probability ``rate`` (training only).

    ``<bos>``, ``<eos>`` and padding are never replaced. Evaluation (``model.eval()``) is unaffected.
    """

    class Config(ComponentConfig):
        rate: float = Field(0.25, ge=0.0, le=1.0, description="Probability of replacing a word.")

    @property
    def rate(self) -> float:
        """Probability of replacing a word."""
        return float(self.config.rate)

    def corrupt_inputs(
        self, inputs: Tensor, lengths: Tensor, step: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Return ``inputs: b t`` with words replaced by ``<unk>`` at rate ``rate``."""
        if not self.training or self.rate == 0.0:
            return inputs
        ctx = self.ctx
        words = (inputs != ctx.pad_id) & (inputs != ctx.bos_id) & (inputs != ctx.eos_id)
        if self.rate >= 1.0:
            drop = words
        else:
            u = torch.rand(inputs.shape, generator=generator, device=inputs.device)
            drop = words & (u < self.rate)
        return torch.where(drop, torch.full_like(inputs, ctx.unk_id), inputs)


class Historyless(WordDropout):
    """Word dropout at rate 1: the decoder sees only z and the position (Bowman et al. 2016)."""

    class Config(ComponentConfig):
        """Historyless decoding has no parameters."""

    rate = 1.0  # type: ignore[assignment]  # a constant instead of the config field

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        if not experiment.has_latent:
            return "hides every previous word, and the language-model baseline has no z: the decoder would see nothing"
        return None
