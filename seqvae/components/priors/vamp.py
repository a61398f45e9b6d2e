"""``vamp``: the VampPrior (Tomczak & Welling 2018) with pseudo-inputs learned in embedding space."""

from __future__ import annotations

import math
from typing import Any

import torch
from einops import rearrange
from pydantic import Field
from torch import Tensor, nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import KL, BuildContext, DiagonalGaussian, Encoder, Posterior, Prior

__all__ = ["VampPrior"]


class VampPrior(Prior):
    """p(z) = (1/K) sum_k q(z | u_k): the encoder's posterior at K learned pseudo-inputs.

    Text is discrete, so each pseudo-input ``u_k`` is a learned sequence of ``pseudo_length`` vectors in
    the encoder's embedding space, read through ``Encoder.forward_embeddings`` (the ``lstm`` and
    ``gru`` encoders have it; the config check refuses an encoder without it). The regularizers'
    posterior transforms (BN-VAE, delta-VAE) are not applied to the pseudo-inputs. The KL is the
    one-sample Monte Carlo estimate (``analytic`` False), shared evenly over ``d``.
    """

    factorized = False

    class Config(ComponentConfig):
        n_pseudo: int = Field(50, ge=1, le=4096, description="Number K of pseudo-inputs.")
        pseudo_length: int = Field(16, ge=1, le=512, description="Length of every pseudo-input, in positions.")
        init_std: float = Field(0.1, gt=0.0, description="Standard deviation of the initial pseudo-input vectors.")

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        self.pseudo = nn.Parameter(config.init_std * torch.randn(config.n_pseudo, config.pseudo_length, ctx.embed_dim))
        self._encoder: list[Encoder] = []  # a plain list: the encoder belongs to the model, not to the prior

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        enc = experiment.component_class("encoder")
        if not enc.reads_embeddings():
            return f"needs an encoder that reads embeddings (forward_embeddings); '{experiment.encoder.kind}' does not"
        return None

    def bind(self, encoder: Encoder) -> None:
        self._encoder[:] = [encoder]

    def components(self) -> DiagonalGaussian:
        """The K pseudo-posteriors q(z | u_k), ``mean, logvar: k d``."""
        if not self._encoder:
            raise RuntimeError("the VampPrior needs an encoder: build it inside a SequenceVAE (or call bind())")
        k, length = self.pseudo.shape[:2]
        lengths = torch.full((k,), length, dtype=torch.long, device=self.pseudo.device)
        post = self._encoder[0].forward_embeddings(self.pseudo, lengths)
        if not isinstance(post, DiagonalGaussian):
            raise TypeError("the VampPrior needs an encoder that returns a DiagonalGaussian")
        return post

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z): ``... d -> ...``."""
        comp = self.components()
        shape = z.shape[:-1]
        flat = rearrange(z, "... d -> (...) d")
        log_q = comp.pairwise_log_prob(flat)  # n k
        return (torch.logsumexp(log_q, -1) - math.log(log_q.shape[-1])).reshape(shape)

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n d``: a pseudo-input per sample, then a draw from its posterior."""
        comp = self.components()
        idx = torch.randint(comp.mean.shape[0], (n,), generator=generator, device=comp.mean.device)
        return comp.select(idx).rsample(generator=generator)

    def kl(self, posterior: Posterior, generator: torch.Generator | None = None) -> KL:
        """One-sample Monte Carlo KL, shared evenly over ``d``: ``b d``."""
        return super().kl(posterior, generator)
