"""Every registered component of every kind passes the public conformance checks.

The parameters come from the registry, so a newly installed plugin is tested with no new test code.
"""

from __future__ import annotations

import pytest

from seqvae.registry import get_registry
from seqvae.testing import check_component

CASES = [(kind, name) for kind in ("encoder", "decoder", "prior", "regularizer", "schedule", "dataset", "strategy")
         for name in get_registry(kind).names()]


@pytest.mark.parametrize(("kind", "name"), CASES, ids=[f"{k}:{n}" for k, n in CASES])
def test_component_conforms(kind: str, name: str) -> None:
    check_component(kind, name)


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_encoder_options_conform(name: str, bidirectional: bool) -> None:
    """Bidirectional and stacked encoders are padding-invariant too."""
    import torch

    from seqvae.testing import TINY_CTX, build_component, random_batch_tokens

    enc = build_component("encoder", name, bidirectional=bidirectional, num_layers=2).eval()
    tokens, lengths = random_batch_tokens([6, 2, 4])
    with torch.no_grad():
        full = enc(tokens, lengths)
        alone = enc(tokens[1:2, :2], lengths[1:2])
    torch.testing.assert_close(alone.mean[0], full.mean[1])
    assert full.mean.shape == (3, TINY_CTX.latent_dim)


@pytest.mark.parametrize("injection", ["init", "concat", "both"])
@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_decoder_injections_conform(name: str, injection: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every z injection mode is causal and step-consistent, and the logits depend on z."""
    import seqvae.testing as kit

    original = kit.build_component

    def with_injection(kind, n, ctx=kit.TINY_CTX, **params):
        return original(kind, n, ctx, z_injection=injection, num_layers=2, **params)

    monkeypatch.setattr(kit, "build_component", with_injection)
    kit.check_decoder(name)


def test_every_kind_has_builtins() -> None:
    """The built-ins the foundation promises are all registered through entry points."""
    expected = {
        "encoder": {"lstm", "gru"},
        "decoder": {"lstm", "gru", "dilated-cnn"},
        "prior": {"gaussian", "mog", "vamp", "vmf"},
        "schedule": {"constant", "linear", "sigmoid", "cyclical"},
        "regularizer": {"word-dropout", "historyless", "free-bits", "bn-vae", "delta-vae", "bag-of-words"},
        "dataset": {"synthetic", "ptb", "text", "labeled-text"},
        "strategy": {"standard", "aggressive", "ae-pretrain"},
    }
    for kind, names in expected.items():
        entries = {e.name: e for e in get_registry(kind).entries()}
        assert names <= set(entries), f"{kind}: missing {names - set(entries)}"
        assert all(entries[n].builtin and entries[n].dist == "seqvae" for n in names)
