"""SequenceVAE: the composed model (a plain ``nn.Module``; Lightning wraps it in ``seqvae.training``)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from seqvae.fused_ce import CE_BLOCK_ROWS, linear_cross_entropy
from seqvae.interfaces import (
    Batch,
    BuildContext,
    ComponentError,
    Decoder,
    Encoder,
    Posterior,
    Prior,
    Regularizer,
    Schedule,
    VAEOutput,
    component_label,
)

__all__ = ["NLL_BLOCK_ROWS", "SequenceVAE", "blocked_token_nll"]


NLL_BLOCK_ROWS = CE_BLOCK_ROWS


def blocked_token_nll(
    features: Tensor, layer: nn.Linear, targets: Tensor, pad_id: int, block: int = NLL_BLOCK_ROWS
) -> Tensor:
    """Token cross-entropy ``b t`` (0 at padding) of ``layer(features)`` for ``features: b t h``, ``targets: b t``.

    Only the positions whose target is not ``pad_id`` are computed, through
    [`linear_cross_entropy`][seqvae.fused_ce.linear_cross_entropy] (``block`` rows at a time, no ``b t v`` tensor,
    differentiable, in the autocast dtype under autocast).
    """
    b, t, _ = features.shape
    flat_targets = rearrange(targets, "b t -> (b t)")
    real = (flat_targets != pad_id).nonzero().squeeze(-1)  # n
    rows = rearrange(features, "b t h -> (b t) h").index_select(0, real)  # n h
    nll = linear_cross_entropy(rows, layer, flat_targets.index_select(0, real), block)  # n
    out = nll.new_zeros(b * t).index_copy(0, real, nll)  # (b t)
    return rearrange(out, "(b t) -> b t", b=b)


class SequenceVAE(nn.Module):
    """Encoder q(z|x), decoder p(x|z), prior p(z), a KL schedule and regularizers applied in order.

    The training objective per sentence is ``rec + beta * KL'`` where ``rec = -log p(x|z)`` (summed
    over the real target tokens; padding never counts), ``KL'`` is the KL after the regularizers'
    ``transform_kl`` hooks, and ``beta`` the KL weight the caller passes (in training, the strategy's choice:
    [`kl_weight`][seqvae.interfaces.kl_weight]). The loss is the batch mean
    plus any regularizer's extra losses.
    """

    def __init__(
        self,
        encoder: Encoder,
        decoder: Decoder,
        prior: Prior,
        schedule: Schedule,
        regularizers: Sequence[Regularizer],
        ctx: BuildContext,
    ):
        super().__init__()
        self.encoder, self.decoder, self.prior = encoder, decoder, prior
        self.regularizers = nn.ModuleList(regularizers)
        self.schedule = schedule
        self.ctx = ctx
        prior.bind(encoder)

    def encode(self, batch: Batch, step: int = 0) -> Posterior:
        """q(z|x) for the sentences of ``batch`` (the encoder reads ``w_1 .. w_n <eos>``).

        The encoder's output goes through each regularizer's ``transform_posterior`` (BN-VAE,
        delta-VAE) and then the prior's ``adapt_posterior`` (the latent family, e.g. vMF), in
        training and in evaluation alike.
        """
        posterior = self.encoder(batch.targets, batch.lengths)
        for reg in self.regularizers:
            posterior = reg.transform_posterior(posterior, step)
        return self.prior.adapt_posterior(posterior)

    def reconstruction_nll(self, batch: Batch, z: Tensor, inputs: Tensor | None = None) -> Tensor:
        """-log p(x|z) per sentence, ``b``; ``inputs`` defaults to the uncorrupted decoder inputs."""
        return self._token_nll(batch, z, batch.inputs if inputs is None else inputs)[0].sum(-1)

    def _token_nll(self, batch: Batch, z: Tensor, inputs: Tensor) -> tuple[Tensor, Tensor | None]:
        """(token NLL ``b t`` with 0 at padding, logits ``b t v`` or None).

        With a decoder that exposes its ``output_layer``, the vocabulary layer and the
        cross-entropy are one fused, blocked operation on the real positions only
        ([`linear_cross_entropy`][seqvae.fused_ce.linear_cross_entropy]): no ``b t v`` logits exist, so None is returned
        for them. Other decoders give logits and the plain masked cross-entropy.
        """
        layer = self.decoder.output_layer()
        if layer is not None:
            features = self.decoder.forward_features(inputs, z, batch.lengths)  # b t h
            return blocked_token_nll(features, layer, batch.targets, self.ctx.pad_id), None
        logits = self.decoder(inputs, z, batch.lengths)  # b t v
        return self.token_nll(logits, batch), logits

    def token_nll(self, logits: Tensor, batch: Batch) -> Tensor:
        """Masked token cross-entropy ``b t`` (0 at padding) from ``logits: b t v``."""
        b = logits.shape[0]
        ce = F.cross_entropy(
            rearrange(logits, "b t v -> (b t) v").float(),
            rearrange(batch.targets, "b t -> (b t)"),
            ignore_index=self.ctx.pad_id,
            reduction="none",
        )
        return rearrange(ce, "(b t) -> b t", b=b)

    def forward(
        self,
        batch: Batch,
        step: int = 0,
        total_steps: int = 1,
        generator: torch.Generator | None = None,
        *,
        beta: float,
    ) -> VAEOutput:
        """One training (or evaluation) pass with a single reparameterised sample of z.

        ``beta`` is the KL weight of this pass. In training the strategy decides it
        ([`kl_weight`][seqvae.interfaces.kl_weight], normally the schedule's value at ``step``);
        the model only applies it.
        """
        for reg in self.regularizers:  # the run's length, as the schedule gets it (Regularizer.total_steps)
            reg.total_steps = total_steps
        posterior = self.encode(batch, step)
        want = (batch.size, self.ctx.latent_dim)
        if tuple(posterior.mean.shape) != want:  # before the decoder fails on it, far from the cause
            raise ComponentError(f"{component_label('encoder', self.encoder)}: posterior mean of shape "
                                 f"{tuple(posterior.mean.shape)}, want b d = {want}")
        z = posterior.rsample(generator=generator)  # b d
        inputs = batch.inputs
        for reg in self.regularizers:
            inputs = reg.corrupt_inputs(inputs, batch.lengths, step, generator)
        token_nll, logits = self._token_nll(batch, z, inputs)  # b t, b t v or None
        rec = token_nll.sum(-1)  # b
        kl_per_dim = self.prior.kl(posterior, generator).per_dim  # b d
        kl_loss = kl_per_dim
        for reg in self.regularizers:
            kl_loss = reg.transform_kl(kl_loss, step)
        beta = float(beta)
        if not (0.0 <= beta < math.inf):
            raise ValueError(f"beta {beta} at step {step}: want a finite number >= 0")
        kl = kl_per_dim.sum(-1)  # b
        loss = (rec + beta * kl_loss.sum(-1)).mean()
        out = VAEOutput(
            loss=loss, rec=rec, kl=kl, kl_per_dim=kl_per_dim, beta=beta, logits=logits, z=z,
            posterior=posterior, terms={"rec": rec.mean(), "kl": kl.mean(), "kl_loss": kl_loss.sum(-1).mean()},
        )
        for reg in self.regularizers:
            for name, value in reg.extra_loss(out, batch, step).items():
                if not isinstance(value, Tensor) or value.dim() != 0:
                    got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
                    raise ComponentError(f"{component_label('regularizer', reg)}: extra_loss['{name}'] must be a "
                                         f"scalar tensor (shape ()), got {got}")
                out.terms[name] = value
                out.loss = out.loss + value
        out.terms["loss"] = out.loss
        return out
