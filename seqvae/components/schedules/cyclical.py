"""``cyclical``: cyclical KL annealing (Fu et al. 2019)."""

from __future__ import annotations

import math

from pydantic import Field

from seqvae.components.schedules._range import RangeConfig
from seqvae.interfaces import Schedule


class CyclicalSchedule(Schedule):
    """M cycles of length T/M; in each, beta rises linearly over the first R of the cycle, then holds.

    beta(t) = start + (stop - start) * min(1, tau / R) with tau = (t mod (T/M)) / (T/M).
    Fu et al.'s defaults: M = 4 cycles, R = 0.5.

    Examples:
        >>> s = CyclicalSchedule(CyclicalSchedule.Config(kind="cyclical"))
        >>> [s(t, 400) for t in (0, 25, 50, 99, 100)]
        [0.0, 0.5, 1.0, 1.0, 0.0]
    """

    class Config(RangeConfig):
        n_cycles: int = Field(4, ge=1, description="Number of cycles M over the run.")
        ratio: float = Field(0.5, gt=0.0, le=1.0, description="Share R of each cycle spent rising.")

    def __call__(self, step: int, total_steps: int) -> float:
        c = self.config
        period = max(1, total_steps) / c.n_cycles
        tau = math.fmod(max(0, step), period) / period
        return c.start + (c.stop - c.start) * min(1.0, tau / c.ratio)
