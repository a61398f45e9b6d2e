"""``mog``: a mixture-of-Gaussians prior, learnable or fixed, with a Monte Carlo KL."""

from __future__ import annotations

import math

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import KL, BuildContext, Posterior, Prior

__all__ = ["MixturePrior"]

_LOG_2PI = math.log(2 * math.pi)


class MixturePrior(Prior):
    """p(z) = sum_c pi_c N(z; mu_c, diag(sigma_c^2)) with C components.

    Means start at ``init_spread * N(0, I)`` (seeded by ``seed``), variances at 1, weights uniform.
    With ``learnable`` all three are trained with the model; otherwise they stay fixed. The KL has no
    closed form: it is the one-sample Monte Carlo estimate log q(z|x) - log p(z) with z ~ q, an
    unbiased estimate (``KL.analytic`` is False, and the results say ``monte-carlo``). As the KL
    does not split over dimensions, ``kl().per_dim`` shares it evenly (``factorized = False``).
    """

    factorized = False

    class Config(ComponentConfig):
        n_components: int = Field(10, ge=1, le=4096, description="Number of mixture components C.")
        learnable: bool = Field(True, description="Train the means, variances and weights.")
        init_spread: float = Field(1.0, ge=0.0, description="Standard deviation of the initial component means.")
        seed: int = Field(0, ge=0, description="Seed of the initial means (fixed components stay there).")

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        c, d = config.n_components, ctx.latent_dim
        g = torch.Generator().manual_seed(config.seed)
        means = config.init_spread * torch.randn(c, d, generator=g)
        params = {"means": means, "logvars": torch.zeros(c, d), "logits": torch.zeros(c)}
        for name, value in params.items():
            if config.learnable:
                setattr(self, name, nn.Parameter(value))
            else:
                self.register_buffer(name, value)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z): ``... d -> ...``."""
        diff = rearrange(z, "... d -> ... 1 d") - self.means  # ... c d
        comp = -0.5 * (_LOG_2PI + self.logvars + diff**2 / self.logvars.exp()).sum(-1)  # ... c
        return torch.logsumexp(comp + torch.log_softmax(self.logits, -1), dim=-1)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n d``: a component per sample, then a Gaussian draw from it."""
        dev = self.means.device
        probs = torch.softmax(self.logits.detach(), -1)
        comp = torch.multinomial(probs, n, replacement=True, generator=generator)  # n
        eps = torch.randn((n, self.ctx.latent_dim), generator=generator, device=dev)
        return self.means[comp] + eps * torch.exp(0.5 * self.logvars[comp])

    def kl(self, posterior: Posterior, generator: torch.Generator | None = None) -> KL:
        """One-sample Monte Carlo KL, shared evenly over ``d``: ``b d``."""
        return super().kl(posterior, generator)
