"""``vmf``: a hyperspherical latent (Xu & Durrett 2018): uniform prior, von Mises-Fisher posterior.

The posterior is vMF(mu(x), kappa) on the unit sphere S^{d-1}, with mu the normalised mean that the
encoder outputs (its log-variance is ignored) and a fixed concentration kappa. Its KL to the uniform
prior depends only on kappa and d, so it is the same constant for every sentence: the model cannot
trade it away, and posterior collapse in the KL sense cannot happen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from seqvae.config import ComponentConfig
from seqvae.interfaces import KL, BuildContext, Posterior, Prior

__all__ = ["VMFPrior", "VonMisesFisher", "log_bessel_iv"]


def log_bessel_iv(order: float, x: float) -> float:
    """log I_order(x), the modified Bessel function of the first kind, for ``order >= 0, x > 0``.

    Sums the power series sum_j (x/2)^(2j+order) / (j! Gamma(j+order+1)) in log space; the terms peak
    near j = x/2, and the sum stops once they are 1e-17 of the largest.

    >>> round(log_bessel_iv(0, 1.0), 10) == round(math.log(1.2660658777520082), 10)
    True
    """
    if x <= 0 or order < 0:
        raise ValueError(f"log_bessel_iv needs order >= 0 and x > 0, got order={order}, x={x}")
    log_half = math.log(x / 2)
    terms: list[float] = []
    j, peak = 0, -math.inf
    while True:
        t = (2 * j + order) * log_half - math.lgamma(j + 1) - math.lgamma(j + order + 1)
        terms.append(t)
        peak = max(peak, t)
        if j > x / 2 and t < peak - 40:
            break
        j += 1
    return peak + math.log(sum(math.exp(t - peak) for t in terms))


def _log_sphere_area(d: int) -> float:
    """log of the surface area of the unit sphere S^{d-1} in R^d: 2 pi^{d/2} / Gamma(d/2)."""
    return math.log(2.0) + 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d)


@dataclass
class VonMisesFisher(Posterior):
    """vMF(mean, kappa) on S^{d-1}: ``mean: b d`` unit vectors, ``kappa`` a fixed positive float.

    Sampling follows Wood (1994): the cosine w = mu.z by rejection, a uniform direction orthogonal
    to mu, and a Householder reflection mapping e_1 to mu, so gradients reach ``mean``. Draws come
    from ``torch.randn``/``torch.rand`` with the given generator (the Beta draw of the rejection step
    is a ratio of chi-square variables), so they are reproducible.
    """

    mean: Tensor
    kappa: float

    @property
    def dim(self) -> int:
        return int(self.mean.shape[-1])

    @property
    def log_normalizer(self) -> float:
        """log C_d(kappa) = (d/2-1) log kappa - (d/2) log 2 pi - log I_{d/2-1}(kappa)."""
        d, k = self.dim, self.kappa
        return (0.5 * d - 1) * math.log(k) - 0.5 * d * math.log(2 * math.pi) - log_bessel_iv(0.5 * d - 1, k)

    @property
    def mean_cosine(self) -> float:
        """E[mu.z] = A_d(kappa) = I_{d/2}(kappa) / I_{d/2-1}(kappa)."""
        d, k = self.dim, self.kappa
        return math.exp(log_bessel_iv(0.5 * d, k) - log_bessel_iv(0.5 * d - 1, k))

    def log_prob(self, z: Tensor) -> Tensor:
        """``... b d -> ... b``: log C_d(kappa) + kappa mu.z."""
        return self.log_normalizer + self.kappa * (z * self.mean).sum(-1)

    def entropy(self) -> Tensor:
        """``b``: -(log C_d(kappa) + kappa A_d(kappa)), the same for every sentence."""
        value = -(self.log_normalizer + self.kappa * self.mean_cosine)
        return self.mean.new_full(self.mean.shape[:-1], value)

    def pairwise_log_prob(self, z: Tensor) -> Tensor:
        """``z: i d -> i j``."""
        return self.log_normalizer + self.kappa * z @ self.mean.T

    def select(self, idx: Tensor) -> VonMisesFisher:
        return VonMisesFisher(self.mean[idx], self.kappa)

    def _sample_cosine(self, n: int, generator: torch.Generator | None) -> Tensor:
        """``n`` draws of w = mu.z by Wood's rejection sampler (float64 for the acceptance test)."""
        d, k = self.dim, self.kappa
        dev = self.mean.device
        m1 = d - 1
        b = m1 / (2 * k + math.sqrt(4 * k * k + m1 * m1))  # = (-2k + sqrt(4k^2 + m1^2)) / m1, stably
        x0 = (1 - b) / (1 + b)
        c = k * x0 + m1 * math.log(1 - x0 * x0)
        out = torch.empty(n, dtype=torch.float64, device=dev)
        todo = torch.arange(n, device=dev)
        while len(todo):
            m = len(todo)
            g1 = torch.randn((m, m1), generator=generator, device=dev, dtype=torch.float64).pow(2).sum(-1)
            g2 = torch.randn((m, m1), generator=generator, device=dev, dtype=torch.float64).pow(2).sum(-1)
            beta = g1 / (g1 + g2)  # Beta(m1/2, m1/2)
            w = (1 - (1 + b) * beta) / (1 - (1 - b) * beta)
            u = torch.rand(m, generator=generator, device=dev, dtype=torch.float64)
            ok = k * w + m1 * torch.log1p(-x0 * w) - c >= torch.log(u)
            out[todo[ok]] = w[ok]
            todo = todo[~ok]
        return out

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised (in ``mean``) sample: ``b d`` or ``k b d``."""
        shape = self.mean.shape if k is None else (k, *self.mean.shape)
        n = math.prod(shape[:-1])
        d = self.dim
        w = self._sample_cosine(n, generator).to(self.mean.dtype).reshape(*shape[:-1], 1)
        v = torch.randn((*shape[:-1], d - 1), generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        v = F.normalize(v, dim=-1)
        x = torch.cat([w, torch.sqrt((1 - w * w).clamp_min(0)) * v], dim=-1)  # around e_1
        e1 = torch.zeros_like(self.mean)
        e1[..., 0] = 1
        u = F.normalize(e1 - self.mean, dim=-1)  # b d: Householder direction mapping e_1 to mean
        return x - 2 * (x * u).sum(-1, keepdim=True) * u


class VMFPrior(Prior):
    """Uniform p(z) on S^{d-1} and a vMF posterior with fixed ``kappa``; KL is constant and analytic.

    KL(vMF(mu, kappa) || U(S^{d-1})) = kappa A_d(kappa) + log C_d(kappa) + log |S^{d-1}|, shared
    evenly over the d dimensions in ``kl().per_dim``. Xu & Durrett use kappa = 80 for PTB with d = 50.
    """

    class Config(ComponentConfig):
        kappa: float = Field(80.0, gt=0.0, le=1e5, description="Fixed concentration of the vMF posterior.")

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        if ctx.latent_dim < 2:
            raise ValueError("the vmf prior needs model.latent_dim >= 2")
        self.register_buffer("_device_anchor", torch.zeros(()), persistent=False)
        probe = VonMisesFisher(torch.zeros(1, ctx.latent_dim), config.kappa)
        self.kl_value = config.kappa * probe.mean_cosine + probe.log_normalizer + _log_sphere_area(ctx.latent_dim)

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: object) -> str | None:
        if experiment.model.latent_dim < 2:  # type: ignore[attr-defined]
            return "needs model.latent_dim >= 2 (a sphere S^{d-1})"
        return None

    def adapt_posterior(self, posterior: Posterior) -> VonMisesFisher:
        """vMF with the normalised mean direction of the encoder's output."""
        if isinstance(posterior, VonMisesFisher):
            return posterior
        return VonMisesFisher(F.normalize(posterior.mean, dim=-1, eps=1e-8), self.config.kappa)

    def log_prob(self, z: Tensor) -> Tensor:
        """``... d -> ...``: -log |S^{d-1}| everywhere on the sphere."""
        return z.new_full(z.shape[:-1], -_log_sphere_area(self.ctx.latent_dim))

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n d`` uniform points on the sphere."""
        z = torch.randn((n, self.ctx.latent_dim), generator=generator, device=self._device_anchor.device)
        return F.normalize(z, dim=-1)

    def kl(self, posterior: Posterior, generator: torch.Generator | None = None) -> KL:
        """The constant analytic KL, ``b d``."""
        b, d = posterior.mean.shape
        return KL(posterior.mean.new_full((b, d), self.kl_value / d), analytic=True)
