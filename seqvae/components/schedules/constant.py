"""``constant``: the same KL weight at every step (beta = 1 is the plain VAE)."""

from __future__ import annotations

from pydantic import Field

from seqvae.config import ComponentConfig
from seqvae.interfaces import Schedule


class ConstantSchedule(Schedule):
    """beta(step) = value.

    Examples:
        >>> ConstantSchedule(ConstantSchedule.Config(kind="constant", value=0.5))(10, 100)
        0.5
    """

    class Config(ComponentConfig):
        value: float = Field(1.0, ge=0.0, description="The KL weight.")

    def __call__(self, step: int, total_steps: int) -> float:
        return float(self.config.value)
