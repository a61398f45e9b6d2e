"""The remedy catalogue: dilated-CNN decoder, mog/vamp/vmf priors, free-bits variants, BN-VAE,
delta-VAE, bag-of-words, and the aggressive / ae-pretrain training strategies."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from typer.testing import CliRunner

from seqvae.cli import app
from seqvae.composer import build_model
from seqvae.config import ConfigError, validate_experiment
from seqvae.data.corpus import TokenStore
from seqvae.data.vocab import SPECIALS, Vocab
from seqvae.interfaces import DiagonalGaussian, Prior, TrainingContext
from seqvae.testing import TINY_CTX, build_component, random_batch_tokens
from tests.scripts import load_script

runner = CliRunner()
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


# ------------------------------------------------------------------------------ dilated CNN


@pytest.mark.parametrize(("params", "field"), [({"variant": "small"}, 15), ({"variant": "custom", "dilations": [1, 3]}, 9),
                                               ({"variant": "custom", "dilations": [2], "kernel_size": 4}, 7)])
def test_dilated_cnn_receptive_field_matches_the_formula(params, field):
    """A token just outside the field leaves the logits alone; the last one inside changes them."""
    dec = build_component("decoder", "dilated-cnn", **params).eval()
    assert dec.receptive_field == field
    t = field + 6
    tokens, lengths = random_batch_tokens([t, t], seed=1)
    z = torch.randn(2, TINY_CTX.latent_dim)
    pos = t - 1  # the logits we watch
    with torch.no_grad():
        base = dec(tokens, z, lengths)[:, pos]
        outside, inside = tokens.clone(), tokens.clone()
        outside[:, pos - field] = 4 + (tokens[:, pos - field] - 3) % 13  # another word
        inside[:, pos - field + 1] = 4 + (tokens[:, pos - field + 1] - 3) % 13
        torch.testing.assert_close(dec(outside, z, lengths)[:, pos], base, atol=0, rtol=0)
        assert (dec(inside, z, lengths)[:, pos] - base).abs().max() > 1e-6


def test_dilated_cnn_variants_and_config_errors():
    assert build_component("decoder", "dilated-cnn", variant="medium").receptive_field == 63
    assert build_component("decoder", "dilated-cnn", variant="large").receptive_field == 125
    with pytest.raises(ConfigError, match="variant 'custom' needs 'dilations'"):
        validate_experiment({"decoder": {"kind": "dilated-cnn", "variant": "custom"}})
    with pytest.raises(ConfigError, match="only for variant 'custom'"):
        validate_experiment({"decoder": {"kind": "dilated-cnn", "dilations": [1, 2]}})


# ------------------------------------------------------------------------------ priors and KL


def _posterior(b=4, d=TINY_CTX.latent_dim, seed=0):
    g = torch.Generator().manual_seed(seed)
    return DiagonalGaussian(torch.randn(b, d, generator=g), 0.5 * torch.randn(b, d, generator=g))


def test_analytic_and_monte_carlo_kl_agree_for_the_gaussian_prior():
    """Closed form vs the interface's Monte Carlo estimate vs a 1-component fixed MoG at the origin."""
    gauss = build_component("prior", "gaussian")
    post = _posterior()
    analytic = gauss.kl(post)
    assert analytic.analytic
    g = torch.Generator().manual_seed(1)
    mc = torch.stack([Prior.kl(gauss, post, g).per_dim.sum(-1) for _ in range(20_000)]).mean(0)
    torch.testing.assert_close(mc, analytic.per_dim.sum(-1), atol=0.05, rtol=0.01)
    mog = build_component("prior", "mog", n_components=1, learnable=False, init_spread=0.0)
    z = torch.randn(7, TINY_CTX.latent_dim)
    torch.testing.assert_close(mog.log_prob(z), gauss.log_prob(z))
    with torch.no_grad():
        mog_kl = mog.kl(post, g)
        assert not mog_kl.analytic
        mog_mc = torch.stack([mog.kl(post, g).per_dim.sum(-1) for _ in range(20_000)]).mean(0)
    torch.testing.assert_close(mog_mc, analytic.per_dim.sum(-1), atol=0.05, rtol=0.01)


def test_mog_log_prob_by_hand_and_learnable_parameters():
    mog = build_component("prior", "mog", n_components=2, init_spread=1.0)
    assert {n for n, _ in mog.named_parameters()} == {"means", "logvars", "logits"}
    z = torch.randn(3, TINY_CTX.latent_dim)
    with torch.no_grad():
        comps = [torch.distributions.Normal(mog.means[c], torch.ones(TINY_CTX.latent_dim)).log_prob(z).sum(-1)
                 for c in range(2)]
    torch.testing.assert_close(mog.log_prob(z), torch.logsumexp(torch.stack(comps), 0) - math.log(2))
    fixed = build_component("prior", "mog", learnable=False)
    assert not list(fixed.parameters())


def test_vamp_prior_is_the_mean_of_the_pseudo_posteriors_and_learns_its_pseudo_inputs():
    enc = build_component("encoder", "lstm")
    vamp = build_component("prior", "vamp", n_pseudo=3, pseudo_length=4)
    with pytest.raises(RuntimeError, match="needs an encoder"):
        vamp.log_prob(torch.zeros(2, TINY_CTX.latent_dim))
    vamp.bind(enc)
    comp = vamp.components()
    z = torch.randn(5, TINY_CTX.latent_dim)
    by_hand = torch.stack([DiagonalGaussian(comp.mean[k], comp.logvar[k]).log_prob(z) for k in range(3)])
    torch.testing.assert_close(vamp.log_prob(z), torch.logsumexp(by_hand, 0) - math.log(3))
    vamp.log_prob(z).sum().backward()
    assert vamp.pseudo.grad is not None and vamp.pseudo.grad.abs().sum() > 0
    assert "prior.pseudo" in dict(build_model(validate_experiment({"prior": "vamp"}), _vocab()).named_parameters())
    assert not any(k.startswith("prior._encoder") for k in build_model(validate_experiment({"prior": "vamp"}),
                                                                       _vocab()).state_dict())


def test_vmf_sampler_density_and_constant_kl():
    from seqvae.components.priors.vmf import VonMisesFisher, log_bessel_iv

    for x in (0.3, 2.0, 60.0):  # I_{1/2}(x) = sqrt(2 / (pi x)) sinh(x)
        assert log_bessel_iv(0.5, x) == pytest.approx(0.5 * math.log(2 / (math.pi * x)) + math.log(math.sinh(x)))
    prior = build_component("prior", "vmf", kappa=20.0)
    post = prior.adapt_posterior(_posterior(3))
    assert isinstance(post, VonMisesFisher)
    torch.testing.assert_close(post.mean.norm(dim=-1), torch.ones(3))
    g = torch.Generator().manual_seed(0)
    z = post.rsample(20_000, generator=g)  # k b d
    torch.testing.assert_close(z.norm(dim=-1), torch.ones(20_000, 3))
    cos = (z * post.mean).sum(-1).mean(0)
    torch.testing.assert_close(cos, torch.full((3,), post.mean_cosine), atol=0.01, rtol=0)
    kl = prior.kl(post)
    assert kl.analytic and torch.allclose(kl.per_dim.sum(-1), torch.full((3,), prior.kl_value))
    mc = (post.log_prob(z) - prior.log_prob(z)).mean(0)
    torch.testing.assert_close(mc, kl.per_dim.sum(-1), atol=0.05, rtol=0)
    # gradients reach the encoder's mean through the Householder reflection
    mean = torch.randn(2, 4, requires_grad=True)
    prior.adapt_posterior(DiagonalGaussian(mean, torch.zeros(2, 4))).rsample(generator=g).sum().backward()
    assert mean.grad is not None and mean.grad.abs().sum() > 0


def test_vmf_model_metrics_run_and_report_the_constant_kl():
    from seqvae.metrics import evaluate

    vocab = _vocab()
    model = build_model(validate_experiment({**_TINY, "prior": {"kind": "vmf", "kappa": 5.0}}), vocab)
    batches = [_store().batch(torch.arange(10), vocab)]
    m = evaluate(model, batches, iw_samples=3)
    assert m["kl"] == pytest.approx(model.prior.kl_value, rel=1e-5)
    assert m["kl_estimator"] == "analytic" and math.isfinite(m["iw_nll"]) and math.isfinite(m["mi"])
    mog = build_model(validate_experiment({**_TINY, "prior": "mog"}), vocab)
    assert evaluate(mog, batches, iw_samples=2)["kl_estimator"].startswith("monte-carlo")


# ------------------------------------------------------------------------------ regularizers


@pytest.mark.parametrize(("mode", "expected"), [
    # kl = [[0.1, 0.6], [0.3, 0.0]], threshold 0.25 (totals use 0.25 * 2 = 0.5)
    ("dimension-batch", [[0.25, 0.6], [0.25, 0.0]]),  # column means 0.2 (floored) and 0.3 (kept)
    ("dimension", [[0.25, 0.6], [0.3, 0.25]]),
    ("sentence", [[0.1, 0.6], [0.25, 0.25]]),  # row totals 0.7 (kept) and 0.3 (floored)
    ("batch", [[0.1, 0.6], [0.3, 0.0]]),  # batch-mean total 0.5: not below the floor
])
def test_free_bits_modes_by_hand(mode, expected):
    reg = build_component("regularizer", "free-bits", threshold=0.25, mode=mode)
    kl = torch.tensor([[0.1, 0.6], [0.3, 0.0]], requires_grad=True)
    out = reg.transform_kl(kl, 0)
    torch.testing.assert_close(out, torch.tensor(expected))
    out.sum().backward()
    assert torch.equal(kl.grad != 0, out != torch.tensor(0.25)) or mode == "batch"  # floored entries: no gradient
    low = build_component("regularizer", "free-bits", threshold=0.4, mode="batch")
    torch.testing.assert_close(low.transform_kl(kl.detach(), 0), torch.full((2, 2), 0.4))  # mean total 0.5 < 0.8


def test_per_dimension_free_bits_refuse_a_prior_without_per_dimension_kl():
    with pytest.raises(ConfigError, match="mode 'dimension-batch' needs a KL per dimension"):
        validate_experiment({"prior": "mog", "regularizers": ["free-bits"]})
    validate_experiment({"prior": "mog", "regularizers": [{"kind": "free-bits", "mode": "sentence"}]})


def test_bn_vae_fixes_the_scale_of_the_means_and_floors_the_kl():
    reg = build_component("regularizer", "bn-vae", gamma=0.7)
    assert not reg.norm.weight.requires_grad and reg.kl_floor == pytest.approx(4 * 0.49 / 2)
    raw = DiagonalGaussian(3.0 + 0.1 * torch.randn(256, 4), torch.zeros(256, 4))  # nearly constant means
    post = reg.transform_posterior(raw, 0)
    torch.testing.assert_close(post.mean.mean(0), torch.zeros(4), atol=2e-4, rtol=0)
    torch.testing.assert_close(post.mean.std(0, unbiased=False), torch.full((4,), 0.7), atol=1e-3, rtol=0)
    kl = build_component("prior", "gaussian").kl(post).per_dim.sum(-1).mean()
    assert kl >= 0.99 * reg.kl_floor  # the bound up to BatchNorm's eps
    reg.eval()  # evaluation uses the running statistics: a single sentence works and is deterministic
    one = reg.transform_posterior(raw.select(torch.tensor([0])), 0)
    assert one.mean.shape == (1, 4)
    reg.train()  # bf16 means (an encoder under bf16-mixed autocast): statistics and output in float32
    half = reg.transform_posterior(DiagonalGaussian(raw.mean.bfloat16(), raw.logvar.bfloat16()), 0)
    assert half.mean.dtype == torch.float32
    torch.testing.assert_close(half.mean.std(0, unbiased=False), torch.full((4,), 0.7), atol=1e-3, rtol=0)


def test_delta_vae_commits_every_dimension_to_at_least_delta():
    reg = build_component("regularizer", "delta-vae", delta=0.15)
    raw = DiagonalGaussian(torch.randn(500, 4) * 2, torch.randn(500, 4) * 3)
    post = reg.transform_posterior(raw, 0)
    kl = build_component("prior", "gaussian").kl(post).per_dim
    assert kl.min() >= 0.15 - 1e-5
    torch.testing.assert_close(kl, 0.15 + raw.mean**2 / 2, atol=1e-4, rtol=1e-4)
    with pytest.raises(ConfigError, match="committed rate holds for the 'gaussian' prior"):
        validate_experiment({"prior": "vmf", "regularizers": ["delta-vae"]})


def test_bag_of_words_loss_by_hand():
    reg = build_component("regularizer", "bag-of-words", weight=2.0)
    torch.nn.init.zeros_(reg.predict.weight)
    torch.nn.init.zeros_(reg.predict.bias)  # uniform prediction: each word costs log V
    vocab = _vocab()
    batch = TokenStore.from_lists([[5, 6, 7], [8]]).batch(torch.arange(2), vocab)
    z = torch.zeros(2, TINY_CTX.latent_dim)
    nll = reg.bow_nll(z, batch)
    torch.testing.assert_close(nll, torch.tensor([3.0, 1.0]) * math.log(TINY_CTX.vocab_size))  # <eos> excluded
    out = SimpleNamespace(z=z)
    assert reg.extra_loss(out, batch, 0)["bow"].item() == pytest.approx(2.0 * nll.mean().item())


# ------------------------------------------------------------------------------ strategies


def test_ae_pretrain_beta_and_the_decoder_reset():
    strat = build_component("strategy", "ae-pretrain", pretrain_fraction=0.25)
    sched = build_component("schedule", "linear")
    assert strat.pretrain_steps(100) == 25
    assert [strat.beta(sched, s, 100) for s in (0, 24)] == [0.0, 0.0]
    assert strat.beta(sched, 25, 100) == sched(0, 75) and strat.beta(sched, 60, 100) == sched(35, 75)
    model = build_model(validate_experiment(_TINY), _vocab())
    opt = torch.optim.Adam(model.parameters())
    model(_store().batch(torch.arange(4), _vocab()), beta=1.0).loss.backward()
    opt.step()
    assert opt.state
    system = TrainingContext(model=model, cfg=validate_experiment({**_TINY, "train": {"max_steps": 100}}),
                             corpus=None, optimizers=[opt])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    strat.before_step(system, None, 24)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    strat.before_step(system, None, 25)
    after = model.state_dict()
    assert strat.state() == {"vae_phase_started_at_step": 25} and not opt.state
    assert not torch.equal(before["decoder.out.weight"], after["decoder.out.weight"])
    assert torch.equal(before["encoder.to_params.weight"], after["encoder.to_params.weight"])


@pytest.mark.parametrize(("optimizer", "encoder_optimizer"), [("adam", "sgd"), ("sgd", "sgd"), ("sgd", "adam")])
def test_aggressive_run_updates_the_encoder_in_inner_steps_and_records_the_phase(tmp_path, optimizer,
                                                                                encoder_optimizer):
    """Also with SGD's sparse embedding gradients: the inner SGD takes them, the inner Adam gets dense ones."""
    from seqvae.training import run_experiment

    cfg = validate_experiment({
        "data": {"dataset": {"kind": "synthetic", "n_sentences": 384, "n_train": 256, "n_valid": 64, "vocab_size": 30,
                             "length": 6}, "batch_size": 16, "eval_batch_size": 64},
        "model": {"latent_dim": 2, "embed_dim": 8, "hidden_size": 8},
        "strategy": {"kind": "aggressive", "max_inner_steps": 6, "window": 3, "check_every": 4,
                     "encoder_optimizer": encoder_optimizer},
        "train": {"max_steps": 12, "optimizer": optimizer, "lr": 0.1 if optimizer == "sgd" else 1e-3},
        "eval": {"iw_samples": 2},
    })
    result = run_experiment(cfg, tmp_path / "run")
    st = result["strategy_state"]
    assert result["strategy"] == "aggressive" and result["status"] == "ok"
    assert [v["step"] for v in st["validation_mi"]][:2] == [0, 4]
    active_steps = st["aggressive_ended_at_step"] or 12
    assert active_steps <= st["inner_steps"] <= 6 * active_steps  # at least one window each active step


def test_aggressive_outer_step_leaves_the_encoder_alone():
    strat = build_component("strategy", "aggressive")
    model = build_model(validate_experiment(_TINY), _vocab())
    model(_store().batch(torch.arange(4), _vocab()), beta=1.0).loss.backward()
    system = TrainingContext(model=model, cfg=validate_experiment(_TINY), corpus=None)
    strat.before_optimizer_step(system, 0)
    assert all(p.grad is None for p in model.encoder.parameters())
    assert any(p.grad is not None for p in model.decoder.parameters())
    strat.active = False
    model(_store().batch(torch.arange(4), _vocab()), beta=1.0).loss.backward()
    strat.before_optimizer_step(system, 1)
    assert all(p.grad is not None for p in model.encoder.parameters())


def test_aggressive_inner_steps_change_only_the_encoder():
    from seqvae.data.datamodule import BucketedBatches

    strat = build_component("strategy", "aggressive", max_inner_steps=4, window=2)
    cfg = validate_experiment({**_TINY, "regularizers": ["bag-of-words"]})
    model = build_model(cfg, _vocab())
    strat._data = BucketedBatches(_store(), _vocab(), 4, 2, 0)
    strat._optimizer = torch.optim.SGD(model.encoder.parameters(), lr=1.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    batch = _store().batch(torch.arange(4), _vocab())
    strat.before_step(TrainingContext(model=model, cfg=cfg, corpus=None), batch, 0)
    assert 2 <= strat.inner_steps <= 4
    assert all(p.grad is None for p in model.parameters())  # nothing left over for the outer step
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith("encoder.") for k in changed), changed


def test_aggressive_inner_steps_freeze_the_rest_with_the_same_encoder_update(monkeypatch):
    """The inner updates turn off the gradients outside the encoder (a speed-up): the encoder ends
    where a full backward would take it, and every requires_grad flag is back afterwards, a
    parameter the user froze included."""
    import contextlib

    from seqvae.components.strategies import aggressive
    from seqvae.data.datamodule import BucketedBatches

    cfg = validate_experiment({**_TINY, "decoder": {"kind": "lstm", "embed_dropout": 0.3}})

    def run(freeze: bool):
        torch.manual_seed(0)
        model = build_model(cfg, _vocab())
        model.decoder.embed.weight.requires_grad_(False)  # frozen by the user: stays frozen
        strat = build_component("strategy", "aggressive", max_inner_steps=4, window=2)
        strat._data = BucketedBatches(_store(), _vocab(), 4, 2, 0)
        strat._optimizer = torch.optim.SGD(model.encoder.parameters(), lr=1.0)
        seen = []
        real = aggressive._only_encoder_trainable
        def spy(m):
            ctx = real(m) if freeze else contextlib.nullcontext()
            seen.append(ctx)
            return ctx
        monkeypatch.setattr(aggressive, "_only_encoder_trainable", spy)
        flags = {k: p.requires_grad for k, p in model.named_parameters()}
        start = model.encoder.to_params.weight.detach().clone()
        torch.manual_seed(1)
        strat.before_step(TrainingContext(model=model, cfg=cfg, corpus=None), None, 0)
        assert {k: p.requires_grad for k, p in model.named_parameters()} == flags
        assert len(seen) == 1 and strat.inner_steps >= 2
        assert not torch.equal(start, model.encoder.to_params.weight)
        return {k: v.clone() for k, v in model.state_dict().items()}

    fast, full = run(True), run(False)
    assert all(torch.allclose(fast[k], full[k], atol=1e-6) for k in full)


def test_strategies_refuse_the_language_model_baseline():
    with pytest.raises(ConfigError, match=r"strategy \(aggressive\): needs a latent variable"):
        validate_experiment({"encoder": "none", "prior": "none", "strategy": "aggressive"})


def test_bench_strategy_axis_and_incompatible_cells_exit_2(tmp_path):
    res = runner.invoke(app, ["bench", "--strategy", "standard", "--strategy", "ae-pretrain", "--dry-run", "--json"])
    assert res.exit_code == 0, res.output
    assert [c["strategy"]["kind"] for c in json.loads(res.stdout)] == ["standard", "ae-pretrain"]
    res = runner.invoke(app, ["bench", "--prior", "mog", "--regularizer", "free-bits", "--dry-run"])
    assert res.exit_code == 2 and "needs a KL per dimension" in res.output


# ------------------------------------------------------------------------------ suites


@pytest.mark.slow  # 10,000 test sentences evaluated: about 30 s on 2 cores
@pytest.mark.skipif(not (SHARED / "snli_vae" / "snli.test.txt").exists(), reason="shared SNLI data absent")
def test_snli_suite_trains_on_valid_and_evaluates_on_test(tmp_path):
    res = runner.invoke(app, [
        "bench", "--suite", "snli", "--data-dir", str(SHARED / "snli_vae"), "--set", "data.dataset.train=snli.valid.txt",
        "--set", "model.embed_dim=16", "--set", "model.hidden_size=16", "--set", "model.latent_dim=4",
        "--max-steps", "5", "--iw-samples", "2", "--out", str(tmp_path / "b"), "--json"])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    assert row["dataset"] == "text" and row["data"]["sentences"]["test"] == 10_000
    assert row["metrics"]["n_sentences"] == 10_000 and row["metrics"]["n_tokens"] == 97_581 + 10_000
    assert row["data"]["vocab_size"] > 4000


def test_suites_state_their_sizes():
    from seqvae.bench.suites import suite_config

    for name, (emb, hid) in {"yahoo": (512, 1024), "yelp": (512, 1024), "snli": (128, 512)}.items():
        cfg = validate_experiment(suite_config(name))
        assert (cfg.model.embed_dim, cfg.model.hidden_size, cfg.model.latent_dim) == (emb, hid, 32)
    assert validate_experiment(suite_config("yelp")).data.dataset.kind == "labeled-text"
    ptb = validate_experiment(suite_config("ptb"))
    epoch = math.ceil(42_068 / ptb.data.batch_size)  # batches in one epoch of PTB train
    assert (ptb.train.val_every, ptb.train.max_steps) == (epoch, 8 * epoch)  # validate once per epoch, 8 epochs


# ------------------------------------------------------------------------------ helpers

_TINY = {"model": {"latent_dim": 4, "embed_dim": 8, "hidden_size": 16}}


def _vocab() -> Vocab:
    return Vocab([*SPECIALS, *(f"w{i}" for i in range(13))])


def _store() -> TokenStore:
    g = torch.Generator().manual_seed(0)
    return TokenStore.from_lists([torch.randint(4, 17, (int(n),), generator=g).tolist()
                                  for n in torch.randint(1, 7, (10,), generator=g)])


@pytest.mark.parametrize(("patience", "ended"), [(1, 200), (2, 300), (3, None)])
def test_aggressive_phase_ends_after_patience_falls_in_validation_mi(patience, ended):
    strat = build_component("strategy", "aggressive", patience=patience)
    for step, mi in [(0, 0.0), (100, 0.5), (200, 0.4), (300, 0.3), (400, 0.6)]:
        if strat.active:
            strat.record_mi(step, mi)
    assert strat.ended_at == ended and strat.active == (ended is None)


def _remedies_script():
    return load_script("benchmarks/quality/remedies.py")


@pytest.fixture(scope="module")
def remedies_baseline(tmp_path_factory):
    """The synthetic remedies table's baseline row trained once (20 steps), for the page tests to copy."""
    runs = tmp_path_factory.mktemp("remedies") / "runs"
    assert _remedies_script().main(["--rows", "baseline", *_SHORT, "--out", str(runs),
                                    "--page", str(runs.parent / "page.md")]) == 0
    return runs


_SHORT = ["--max-steps", "20", "--iw-samples", "0"]


def test_remedies_page_names_the_rows_not_yet_measured(tmp_path, remedies_baseline):
    remedies = _remedies_script()
    shutil.copytree(remedies_baseline, tmp_path / "runs")
    # render only: the finished baseline is reused, the vmf row is not trained, and the page says so
    page = tmp_path / "two.md"
    assert remedies.main([*_SHORT, "--out", str(tmp_path / "runs"), "--rows", "vmf", "baseline", "--render-only",
                          "--page", str(page)]) == 1
    assert not (tmp_path / "runs" / "vmf").exists()
    text = page.read_text()
    assert "**Partial: 1 of 2 rows measured.**" in text
    n = torch.get_num_threads()
    assert f"with {n} CPU thread{'' if n == 1 else 's'} (Python" in text  # recorded by the row's run
    table = [line for line in text.splitlines() if line.startswith("| ")]
    assert [line.split(" | ")[0] for line in table] == ["| row", "| baseline", "| vmf"]  # catalogue order
    assert table[2].startswith("| vmf | not run yet |") and table[2].count("|") == table[0].count("|")
    assert table[1].count("|") == table[0].count("|") and table[1].endswith("| matches: collapsed |")


def test_remedies_page_shows_how_far_an_interrupted_row_got(tmp_path, monkeypatch, remedies_baseline):
    """A SIGTERM mid-row writes the page with that row's step, seconds and strategy state, read from
    its resume checkpoint (a multi-hour aggressive row is otherwise invisible until it ends)."""
    import seqvae.training as T

    remedies = _remedies_script()
    all_rows = remedies._all_rows
    # at most 2 encoder updates per step: the row's shape, at a fraction of the 100 of the default
    monkeypatch.setattr(remedies, "_all_rows", lambda p: {
        **all_rows(p), "aggressive": {"strategy": {"kind": "aggressive", "max_inner_steps": 2}}})
    original = T.ResumeCheckpoint.on_train_batch_end

    def sigterm_at_step_8(self, trainer, module, *args):
        if trainer.global_step == 8:
            os.kill(os.getpid(), signal.SIGTERM)  # handled before the callback runs: it saves step 8
        original(self, trainer, module, *args)

    shutil.copytree(remedies_baseline, tmp_path / "runs")
    page = tmp_path / "page.md"
    args = ["--rows", "baseline", "aggressive", *_SHORT, "--out", str(tmp_path / "runs"), "--page", str(page)]
    monkeypatch.setattr(T.ResumeCheckpoint, "on_train_batch_end", sigterm_at_step_8)
    with pytest.raises(T.RunInterrupted, match="at step 8"):
        remedies.main(args)
    text = page.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ")]
    row = next(line for line in table if line.startswith("| aggressive |"))
    assert row.startswith("| aggressive | in progress: step 8 of 20 |") and row.count("|") == table[0].count("|")
    assert "**Partial: 1 of 2 rows measured.**" in text
    state = json.loads(text.split("- `aggressive`, at step 8: ", 1)[1].splitlines()[0])
    assert state["active"] is True and state["inner_steps"] >= 8 and "optimizer" not in state
    # the same row trained by the next run replaces the progress with its numbers
    monkeypatch.setattr(T.ResumeCheckpoint, "on_train_batch_end", original)
    assert remedies.main(args) == 0
    assert "in progress" not in page.read_text() and "Partial" not in page.read_text()


def test_bn_vae_floor_survives_adam_shrinking_the_encoder():
    """With BatchNorm's additive eps, Adam shrinks the means' spread below eps and the KL escapes the
    floor (measured on PTB); the exact normalisation leaves the KL at the floor."""
    torch.manual_seed(0)
    reg = build_component("regularizer", "bn-vae", gamma=0.7)
    prior = build_component("prior", "gaussian")
    x = torch.randn(64, 16)
    enc = torch.nn.Linear(16, 4)
    with torch.no_grad():
        enc.weight.mul_(0.01)  # a small spread of means to start from, as an untrained encoder gives
    logvar = torch.nn.Parameter(torch.zeros(4))
    opt = torch.optim.Adam([*enc.parameters(), logvar, *reg.parameters()], lr=1e-3)
    for step in range(100):
        post = reg.transform_posterior(DiagonalGaussian(enc(x), logvar.expand(64, 4)), step)
        kl = prior.kl(post).per_dim.sum(-1).mean()  # the KL alone: it pulls every way it can
        opt.zero_grad()
        kl.backward()
        opt.step()
    assert kl.detach().item() >= 0.999 * reg.kl_floor
    reg.eval()  # the running statistics follow the batch ones: evaluation keeps the floor too
    post = reg.transform_posterior(DiagonalGaussian(enc(x), logvar.expand(64, 4)), 0)
    assert prior.kl(post).per_dim.sum(-1).mean().detach().item() >= 0.9 * reg.kl_floor


def test_remedies_direction_checks_compare_with_the_baseline():
    check = _remedies_script().check
    base = {"kl": 0.01, "au": 0, "iw_nll": 108.35, "collapsed": True}
    up = {"kl": 6.96, "au": 32, "iw_nll": 112.68, "collapsed": False}
    assert check("au_up", up, base, None).startswith("matches: AU 0 -> 32")
    assert check("au_up", {**up, "collapsed": True}, base, None).startswith("does not match")
    both = check("au_up_nll_down", up, base, None)
    assert both.startswith("matches: AU 0 -> 32") and both.endswith("IW-NLL 108.35 -> 112.68 does not match")
    assert check("au_up_nll_down", {**up, "iw_nll": 100.0}, base, None).endswith("-> 100.00 matches")
    assert check("kl_up", {**up, "kl": 0.05}, base, None).startswith("does not match")  # +0.04 nats is not up
