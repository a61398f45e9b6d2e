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


# --- the checks added for plugin authors: each one planted as a bug and caught


def test_kit_rejects_a_prior_whose_samples_are_too_wide(fresh_registries):
    from seqvae.components.priors.gaussian import GaussianPrior
    from seqvae.testing import check_prior

    class TooWide(GaussianPrior):
        def sample(self, n, generator=None):
            return 2 * super().sample(n, generator)  # log_prob still says N(0, I)

    get_registry("prior").register("too-wide", TooWide)
    with pytest.raises(AssertionError, match="sample\\(\\) does not draw from log_prob"):
        check_prior("too-wide")


def test_kit_rejects_a_prior_whose_samples_are_shifted(fresh_registries):
    from seqvae.components.priors.gaussian import GaussianPrior
    from seqvae.testing import check_prior

    class Shifted(GaussianPrior):
        def sample(self, n, generator=None):
            return super().sample(n, generator) + 1.0

    get_registry("prior").register("shifted", Shifted)
    with pytest.raises(AssertionError, match="sample\\(\\) does not draw from log_prob"):
        check_prior("shifted")


def test_kit_rejects_an_extra_loss_that_is_not_a_scalar(fresh_registries):
    from seqvae.components.regularizers.bag_of_words import BagOfWords
    from seqvae.testing import check_regularizer

    class PerSentence(BagOfWords):
        def extra_loss(self, out, batch, step):
            return {"bow": out.rec}  # b, not a scalar

    get_registry("regularizer").register("per-sentence", PerSentence)
    with pytest.raises(AssertionError, match=r"extra_loss\['bow'\] must be a scalar tensor \(shape \(\)\), got \(2,\)"):
        check_regularizer("per-sentence")


def test_kit_rejects_an_undeclared_beta_above_one_and_accepts_a_declared_one(fresh_registries):
    from seqvae.components.schedules.linear import LinearSchedule
    from seqvae.testing import check_schedule

    class Doubled(LinearSchedule):
        def __call__(self, step, total_steps):
            return 2 * super().__call__(step, total_steps)

    class DeclaredDoubled(Doubled):
        max_beta = 2.0

    get_registry("schedule").register("doubled", Doubled)
    get_registry("schedule").register("declared-doubled", DeclaredDoubled)
    with pytest.raises(AssertionError, match="beta 2 > 1 .* max_beta"):
        check_schedule("doubled")
    check_schedule("declared-doubled")


def test_kit_shape_failures_show_the_shape_they_got(fresh_registries):
    class Flat(GRUEncoder):
        def forward(self, tokens, lengths):
            post = super().forward(tokens, lengths)
            return DiagonalGaussian(post.mean[:, :1], post.logvar[:, :1])

    get_registry("encoder").register("flat", Flat)
    with pytest.raises(AssertionError, match=r"want mean b d = \(3, 4\), got \(3, 1\)"):
        check_encoder("flat")


def test_a_plugin_regularizer_reads_the_run_length(fresh_registries, tmp_path):
    """A capacity that rises over the run (Burgess et al.'s controlled capacity) needs the run's
    length: every hook may read ``self.total_steps`` (train.max_steps) beside its ``step``."""
    from pydantic import Field

    from seqvae.config import ComponentConfig, validate_experiment
    from seqvae.interfaces import Regularizer
    from seqvae.training import run_experiment

    seen: list[tuple[int, int]] = []

    class RisingCapacity(Regularizer):
        class Config(ComponentConfig):
            capacity: float = Field(5.0, ge=0)

        def transform_kl(self, kl_per_dim, step):
            seen.append((step, self.total_steps))
            target = self.config.capacity * min(1.0, step / self.total_steps)  # nats, rising over the run
            return (kl_per_dim.sum(-1, keepdim=True) - target).abs() / kl_per_dim.shape[-1] + 0 * kl_per_dim

    get_registry("regularizer").register("rising-capacity", RisingCapacity)
    cfg = validate_experiment({
        "regularizers": ["rising-capacity"], "model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 8},
        "data": {"dataset": {"kind": "synthetic", "n_sentences": 90, "n_train": 60, "n_valid": 15, "vocab_size": 20,
                             "length": 4, "embed_dim": 8, "hidden_size": 8}, "batch_size": 16},
        "train": {"max_steps": 6}, "eval": {"iw_samples": 0},
    })
    run_experiment(cfg, tmp_path / "run")
    assert [step for step, _ in seen] == list(range(6))  # one training forward per step
    assert {total for _, total in seen} == {6}  # the run's length, without a duplicate in the config


# --- run-time boundary checks: a plugin's broken output is named where it happens


def _tiny_cfg(**parts):
    from seqvae.config import validate_experiment

    return validate_experiment({"model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 8},
                                "data": {"dataset": {"kind": "synthetic", "n_sentences": 90, "n_train": 60,
                                                     "n_valid": 15, "vocab_size": 20, "length": 4, "embed_dim": 8,
                                                     "hidden_size": 8}, "batch_size": 16},
                                "train": {"max_steps": 3}, "eval": {"iw_samples": 0}, **parts})


@pytest.mark.parametrize("planted", ["encoder-shape", "negative-beta", "extra-loss-vector"])
def test_a_broken_component_is_named_at_run_time(fresh_registries, tmp_path, planted):
    from seqvae.components.regularizers.bag_of_words import BagOfWords
    from seqvae.components.schedules.linear import LinearSchedule
    from seqvae.interfaces import ComponentError
    from seqvae.training import run_experiment

    class Flat(GRUEncoder):
        def forward(self, tokens, lengths):
            post = super().forward(tokens, lengths)
            return DiagonalGaussian(post.mean[:, :1], post.logvar[:, :1])

    class Negative(LinearSchedule):
        def __call__(self, step, total_steps):
            return -0.5

    class PerSentence(BagOfWords):
        def extra_loss(self, out, batch, step):
            return {"bow": out.rec}

    get_registry("encoder").register("flat", Flat)
    get_registry("schedule").register("negative", Negative)
    get_registry("regularizer").register("per-sentence", PerSentence)
    parts, says = {
        "encoder-shape": ({"encoder": "flat"}, r"encoder 'flat' \(.*\): posterior mean of shape \((\d+), 1\), want b d = \(\1, 3\)"),
        "negative-beta": ({"schedule": "negative"}, r"schedule 'negative' \(.*\).* gave beta -0.5 at step 0 of 3"),
        "extra-loss-vector": ({"regularizers": ["per-sentence"]},
                              r"regularizer 'per-sentence' \(.*\): extra_loss\['bow'\] must be a scalar tensor"),
    }[planted]
    with pytest.raises(ComponentError, match=says):
        run_experiment(_tiny_cfg(**parts), tmp_path / "run")
