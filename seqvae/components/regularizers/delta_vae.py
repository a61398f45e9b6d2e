"""``delta-vae``: a committed rate of at least delta nats per dimension (Razavi et al. 2019), Gaussian form."""

from __future__ import annotations

import math
from typing import Any

import torch
from pydantic import Field

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, DiagonalGaussian, Posterior, Regularizer

__all__ = ["DeltaVAE", "variance_bounds"]


def variance_bounds(delta: float) -> tuple[float, float]:
    """The roots l < 1 < u of ln s - s + 2 delta + 1 = 0 (bisection to machine precision).

    For a posterior variance s in [l, u] the term 2 delta + 1 + ln s - s is non-negative, so a mean
    with mu^2 >= that term gives KL(N(mu, s) || N(0, 1)) >= delta.

    >>> l, u = variance_bounds(0.15)
    >>> abs(math.log(l) - l + 1.3) < 1e-12 and abs(math.log(u) - u + 1.3) < 1e-12 and l < 1 < u
    True
    """
    if delta <= 0:
        raise ValueError(f"delta must be > 0, got {delta}")

    def f(s: float) -> float:
        return math.log(s) - s + 2 * delta + 1

    def root(lo: float, hi: float) -> float:
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            if (f(lo) < 0) == (f(mid) < 0):
                lo = mid
            else:
                hi = mid
        return 0.5 * (lo + hi)

    return root(1e-300, 1.0), root(1.0, 4 * delta + 4)


class DeltaVAE(Regularizer):
    """Constrain q(z|x) so that every dimension's KL to N(0, 1) is at least ``delta`` (Razavi et al. 2019).

    The variance is squashed into [l, u] (``variance_bounds``): s = l + (u - l) sigmoid(logvar_raw),
    and the mean is mu = sign(m) sqrt(2 delta + 1 + ln s - s + m^2) for the encoder's raw mean m. Then
    KL_d = delta + m^2 / 2 exactly, so the total KL is at least ``delta * d`` whatever the encoder does.
    This is the Gaussian variant used in the Yahoo/Yelp/PTB literature (valdersoul/bn-vae's
    re-implementation keeps mu >= 0; keeping the sign of m is our choice). Meant for the ``gaussian`` prior.
    """

    class Config(ComponentConfig):
        delta: float = Field(0.15, gt=0.0, le=50.0, description="Committed rate per latent dimension, in nats.")

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        self.lower, self.upper = variance_bounds(config.delta)

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        if experiment.prior.kind != "gaussian":
            return f"the committed rate holds for the 'gaussian' prior, not '{experiment.prior.kind}'"
        return None

    def transform_posterior(self, posterior: Posterior, step: int) -> Posterior:
        if not isinstance(posterior, DiagonalGaussian):
            raise TypeError(f"delta-vae needs a Gaussian posterior, got {type(posterior).__name__}")
        var = self.lower + (self.upper - self.lower) * torch.sigmoid(posterior.logvar)
        logvar = torch.log(var)
        base = (2 * self.config.delta + 1 + logvar - var).clamp_min(0)
        m = posterior.mean
        mean = torch.where(m >= 0, 1.0, -1.0) * torch.sqrt(base + m * m + 1e-12)
        return DiagonalGaussian(mean, logvar)
