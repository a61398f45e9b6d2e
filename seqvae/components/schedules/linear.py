"""``linear``: KL warm-up from ``start`` to ``stop`` over ``warmup_steps``, then held."""

from __future__ import annotations

from pydantic import Field

from seqvae.components.schedules._range import RangeConfig
from seqvae.interfaces import Schedule


class LinearSchedule(Schedule):
    """beta(step) = start + (stop - start) * min(1, step / warmup_steps).

    He et al. 2019 warm up from 0.1 to 1 over 10 epochs; Li et al. 2019 from 0.

    Examples:
        >>> s = LinearSchedule(LinearSchedule.Config(kind="linear", warmup_steps=100))
        >>> [s(0, 1000), s(50, 1000), s(100, 1000), s(900, 1000)]
        [0.0, 0.5, 1.0, 1.0]
    """

    class Config(RangeConfig):
        warmup_steps: int | None = Field(
            None, ge=1, description="Steps to go from start to stop; None = half of the run."
        )

    def __call__(self, step: int, total_steps: int) -> float:
        c = self.config
        warmup = c.warmup_steps or max(1, total_steps // 2)
        return c.start + (c.stop - c.start) * min(1.0, max(0, step) / warmup)
