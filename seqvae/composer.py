"""From a validated config to a model (the grid of configs is [`seqvae.bench.grid`][seqvae.bench.grid]'s)."""

from __future__ import annotations

from typing import Any

from torch import nn

from seqvae.config import ExperimentConfig
from seqvae.data.vocab import Vocab
from seqvae.interfaces import BuildContext
from seqvae.model import SequenceVAE
from seqvae.registry import get_registry

__all__ = ["build_context", "build_model", "component_provenance", "reinitialise", "uniform_init"]


def build_context(cfg: ExperimentConfig, vocab: Vocab) -> BuildContext:
    """The shared sizes for ``cfg`` on a corpus with vocabulary ``vocab``.

    ``latent_dim`` is 0 for the language-model baseline (encoder and prior ``none``).
    """
    m = cfg.model
    return BuildContext(
        vocab_size=len(vocab), pad_id=vocab.pad_id, bos_id=vocab.bos_id, eos_id=vocab.eos_id,
        unk_id=vocab.unk_id, latent_dim=m.latent_dim if cfg.has_latent else 0, embed_dim=m.embed_dim,
        hidden_size=m.hidden_size,
    )


def build_model(cfg: ExperimentConfig, vocab: Vocab) -> SequenceVAE:
    """Build the ``SequenceVAE`` that ``cfg`` names, through the registries."""
    ctx = build_context(cfg, vocab)

    def make(kind: str, spec: Any) -> Any:
        return get_registry(kind).get(spec.kind)(spec, ctx)

    encoder, decoder = make("encoder", cfg.encoder), make("decoder", cfg.decoder)
    if cfg.model.init == "uniform":
        for module in (encoder, decoder):
            uniform_init(module, cfg.model.init_range, cfg.model.embed_init_range)
    return SequenceVAE(
        encoder=encoder,
        decoder=decoder,
        prior=make("prior", cfg.prior),
        schedule=make("schedule", cfg.schedule),
        regularizers=[make("regularizer", r) for r in cfg.regularizers],
        ctx=ctx,
    )


def uniform_init(module: nn.Module, init_range: float, embed_init_range: float) -> None:
    """Re-initialise ``module`` as He et al. 2019 do: embeddings U(-embed_init_range, embed_init_range), every other
    parameter U(-init_range, init_range).

    An embedding's padding row stays zero. Normalisation layers (BatchNorm, LayerNorm, GroupNorm, ...)
    keep their own initialisation: a norm scale near 0 would switch the layer off.
    """
    norms = (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)
    for sub in module.modules():
        if isinstance(sub, norms):
            continue
        for name, p in sub.named_parameters(recurse=False):
            if isinstance(sub, nn.Embedding) and name == "weight":
                nn.init.uniform_(p, -embed_init_range, embed_init_range)
                if sub.padding_idx is not None:
                    nn.init.zeros_(p[sub.padding_idx])  # under no_grad in nn.init
            else:
                nn.init.uniform_(p, -init_range, init_range)


def reinitialise(module: nn.Module, cfg: ExperimentConfig) -> None:
    """Fresh parameters for every layer of ``module``, drawn as ``build_model`` draws them (``model.init``).

    Autoencoder pretraining re-initialises the decoder this way when the VAE phase starts.
    """
    for sub in module.modules():
        if sub is not module and hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    if cfg.model.init == "uniform":
        uniform_init(module, cfg.model.init_range, cfg.model.embed_init_range)


def component_provenance(cfg: ExperimentConfig) -> dict[str, str]:
    """Each component name used by ``cfg`` mapped to ``package==version`` of its provider."""
    out: dict[str, str] = {}
    for _, kind, spec in cfg.components():
        out[f"{kind}:{spec.kind}"] = get_registry(kind).provenance(spec.kind)
    return out
