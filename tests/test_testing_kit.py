"""The conformance kit catches the bugs it is meant to catch (a kit that always passes proves nothing)."""

from __future__ import annotations

import pytest
import torch

from seqvae.components.decoders.rnn import GRUDecoder
from seqvae.components.encoders.rnn import GRUEncoder
from seqvae.interfaces import DiagonalGaussian
from seqvae.registry import get_registry
from seqvae.testing import check_decoder, check_encoder


class PeekingDecoder(GRUDecoder):
    """Adds the mean of ALL input embeddings to every position: not causal."""

    def forward(self, inputs, z, lengths):
        logits = super().forward(inputs, z, lengths)
        return logits + self.embed(inputs).mean(1, keepdim=True).sum(-1, keepdim=True)


class PaddingSensitiveEncoder(GRUEncoder):
    """Averages embeddings over the padded width: the result changes with padding."""

    def forward(self, tokens, lengths):
        post = super().forward(tokens, lengths)
        shift = self.embed(tokens).mean(1).sum(-1, keepdim=True)
        return DiagonalGaussian(post.mean + shift, post.logvar)


def test_kit_rejects_a_non_causal_decoder(fresh_registries):
    get_registry("decoder").register("peeking", PeekingDecoder)
    with pytest.raises(AssertionError, match="not causal"):
        check_decoder("peeking")


def test_kit_rejects_a_padding_sensitive_encoder(fresh_registries):
    get_registry("encoder").register("padsensitive", PaddingSensitiveEncoder)
    with pytest.raises(AssertionError, match="padding changes"):
        check_encoder("padsensitive")


def test_kit_rejects_a_step_that_disagrees_with_forward(fresh_registries):
    class Drifting(GRUDecoder):
        def step(self, token, state):
            logits, state = super().step(token, state)
            return logits + 0.1, state

    get_registry("decoder").register("drifting", Drifting)
    with pytest.raises(AssertionError, match="step\\(\\) differs"):
        check_decoder("drifting")
    torch.manual_seed(0)


def test_kit_rejects_a_decoder_whose_beam_reorder_ignores_the_batch(fresh_registries):
    class NoReorder(GRUDecoder):
        def reorder_state(self, state, index):
            return state

    get_registry("decoder").register("noreorder", NoReorder)
    with pytest.raises(AssertionError, match="reorder_state"):
        check_decoder("noreorder")


def test_kit_rejects_registry_metadata_problems(fresh_registries):
    from seqvae.testing import check_registry_metadata

    class Undocumented(GRUDecoder):
        pass

    Undocumented.__doc__ = None
    get_registry("decoder").register("undocumented", Undocumented)
    with pytest.raises(AssertionError, match="needs a docstring"):
        check_registry_metadata("decoder", "undocumented")
    with pytest.raises(AssertionError, match="not registered"):
        check_registry_metadata("decoder", "nothing-here")
