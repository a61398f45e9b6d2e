"""The plugin's own tests: seqvae's public conformance kit, run on both components."""

from __future__ import annotations

import pytest
import torch

from seqvae.testing import TINY_CTX, build_component, check_component


@pytest.mark.parametrize("kind", ["encoder", "decoder"])
def test_transformer_conforms(kind: str) -> None:
    check_component(kind, "transformer")


def test_decoder_is_causal_with_z_memory_and_without() -> None:
    """Logits depend on z only through the memory; the LM form (latent 0) has no cross-attention."""
    import dataclasses

    dec = build_component("decoder", "transformer").eval()
    tokens = torch.randint(4, TINY_CTX.vocab_size, (2, 5))
    a = dec(tokens, torch.zeros(2, TINY_CTX.latent_dim), torch.tensor([5, 5]))
    b = dec(tokens, torch.ones(2, TINY_CTX.latent_dim), torch.tensor([5, 5]))
    assert (a - b).abs().max() > 1e-4
    lm = build_component("decoder", "transformer", dataclasses.replace(TINY_CTX, latent_dim=0))
    assert all(layer.cross is None for layer in lm.layers)
