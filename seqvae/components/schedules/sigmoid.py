"""``sigmoid``: logistic KL annealing (Bowman et al. 2016)."""

from __future__ import annotations

import math

from pydantic import Field

from seqvae.config import ComponentConfig
from seqvae.interfaces import Schedule


class SigmoidSchedule(Schedule):
    """beta(step) = stop / (1 + exp(-k (step - x0))).

    The popular Sentence-VAE code uses ``k = 0.0025, x0 = 2500`` (steps counted over all epochs).
    Left unset, ``x0`` is the middle of the run and ``k = 10 / total_steps``, so beta climbs from
    about 0.007 to 0.993 within the run whatever its length.

    Examples:
        >>> s = SigmoidSchedule(SigmoidSchedule.Config(kind="sigmoid", k=0.0025, x0=2500))
        >>> round(s(2500, 10000), 3), round(s(4000, 10000), 3)
        (0.5, 0.977)
    """

    class Config(ComponentConfig):
        k: float | None = Field(None, gt=0.0, description="Steepness; None = 10 / total_steps.")
        x0: float | None = Field(None, ge=0.0, description="Step where beta = stop/2; None = total/2.")
        stop: float = Field(1.0, ge=0.0, description="The value beta tends to.")

    def __call__(self, step: int, total_steps: int) -> float:
        c = self.config
        k = c.k if c.k is not None else 10.0 / max(1, total_steps)
        x0 = c.x0 if c.x0 is not None else total_steps / 2
        u = -k * (step - x0)
        if u > 700:  # exp overflow: beta is 0 to double precision
            return 0.0
        return c.stop / (1.0 + math.exp(u))
