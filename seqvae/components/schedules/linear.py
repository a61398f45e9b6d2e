"""``linear``: KL warm-up from ``start`` to ``stop`` over ``warmup_steps``, then held."""

from __future__ import annotations

from pydantic import Field, model_validator

from seqvae.config import ComponentConfig
from seqvae.interfaces import Schedule


class LinearSchedule(Schedule):
    """beta(step) = start + (stop - start) * min(1, step / warmup_steps).

    He et al. 2019 warm up from 0.1 to 1 over 10 epochs; Li et al. 2019 from 0.

    Examples:
        >>> s = LinearSchedule(LinearSchedule.Config(kind="linear", warmup_steps=100))
        >>> [s(0, 1000), s(50, 1000), s(100, 1000), s(900, 1000)]
        [0.0, 0.5, 1.0, 1.0]
    """

    class Config(ComponentConfig):
        start: float = Field(0.0, ge=0.0, description="beta at step 0.")
        stop: float = Field(1.0, ge=0.0, description="beta after the warm-up.")
        warmup_steps: int | None = Field(
            None, ge=1, description="Steps to go from start to stop; None = half of the run."
        )

        @model_validator(mode="after")
        def _ordered(self):
            if self.start > self.stop:
                raise ValueError(f"start ({self.start}) must not exceed stop ({self.stop})")
            return self

    def __call__(self, step: int, total_steps: int) -> float:
        c = self.config
        warmup = c.warmup_steps or max(1, total_steps // 2)
        return c.start + (c.stop - c.start) * min(1.0, max(0, step) / warmup)
