"""The ELBO, the metric definitions, and one short training run end to end."""

from __future__ import annotations

import json
import math

import pytest
import torch

from seqvae.composer import build_model
from seqvae.config import validate_experiment
from seqvae.data.corpus import TokenStore
from seqvae.data.vocab import SPECIALS, Vocab
from seqvae.interfaces import DiagonalGaussian
from seqvae.metrics import active_units, batch_generator, batch_mutual_information, evaluate

VOCAB = Vocab([*SPECIALS, *(f"w{i}" for i in range(20))])
TINY = {"model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 12}}


def tiny_model(**raw):
    torch.manual_seed(0)
    return build_model(validate_experiment({**TINY, **raw}), VOCAB)


def tiny_store(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    sents = [torch.randint(4, 24, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
             for _ in range(n)]
    return TokenStore.from_lists(sents)


def test_padding_never_counts_in_the_elbo():
    model = tiny_model(decoder="gru").eval()
    store = tiny_store(8)
    batch = store.batch(torch.arange(8), VOCAB)
    z = torch.randn(8, 3)
    with torch.no_grad():
        rec = model.reconstruction_nll(batch, z)
        post = model.encode(batch)
        for i in range(8):
            alone = store.batch(torch.tensor([i]), VOCAB)
            torch.testing.assert_close(model.reconstruction_nll(alone, z[i : i + 1])[0], rec[i])
            p1 = model.encode(alone)
            torch.testing.assert_close(p1.mean[0], post.mean[i])


def test_loss_is_rec_plus_beta_kl_with_regularizers_in_order():
    model = tiny_model(schedule={"kind": "constant", "value": 0.5},
                       regularizers=[{"kind": "free-bits", "threshold": 5.0}]).eval()
    batch = tiny_store(6).batch(torch.arange(6), VOCAB)
    from seqvae.interfaces import kl_weight
    from seqvae.testing import build_component

    beta = kl_weight(build_component("strategy", "standard"), model.schedule, 3, 10)  # what training passes
    out = model(batch, step=3, total_steps=10, generator=torch.Generator().manual_seed(1), beta=beta)
    assert beta == out.beta == 0.5
    kl_floor = torch.clamp(out.kl_per_dim.mean(0), min=5.0).sum()  # every dim below 5 nats -> floored
    torch.testing.assert_close(out.loss, out.rec.mean() + 0.5 * kl_floor)
    torch.testing.assert_close(out.kl, out.kl_per_dim.sum(-1))  # reported KL stays raw
    assert out.logits is None  # the RNN decoder's vocabulary layer ran fused: no b t v logits were made
    full = model.token_nll(model.decoder(batch.inputs, out.z, batch.lengths), batch).sum(-1)
    torch.testing.assert_close(out.rec, full)


def test_historyless_decoder_sees_only_unk_during_training():
    model = tiny_model(regularizers=["historyless"]).train()
    batch = tiny_store(6).batch(torch.arange(6), VOCAB)
    seen = []
    # the decoder's embedding sees the (corrupted) inputs, in the fused path and the logits path alike
    model.decoder.embed.register_forward_pre_hook(lambda mod, args: seen.append(args[0].clone()))
    model(batch, beta=1.0)
    inputs = seen[-1]
    words = batch.inputs >= 4
    assert torch.all(inputs[words] == VOCAB.unk_id)
    assert torch.equal(inputs[~words], batch.inputs[~words])
    model.eval()
    model(batch, beta=1.0)
    assert torch.equal(seen[-1], batch.inputs)  # evaluation is never corrupted


def test_mi_is_zero_when_collapsed_and_log_b_when_separated():
    b, d = 32, 4
    g = torch.Generator().manual_seed(0)
    same = DiagonalGaussian(torch.zeros(b, d), torch.zeros(b, d))
    mi0 = torch.stack([batch_mutual_information(same, same.rsample(generator=g)) for _ in range(200)]).mean()
    assert abs(mi0.item()) < 0.05
    far = DiagonalGaussian(torch.arange(b).float()[:, None].repeat(1, d) * 10, torch.full((b, d), -6.0))
    mi = torch.stack([batch_mutual_information(far, far.rsample(generator=g)) for _ in range(200)]).mean()
    assert mi.item() == pytest.approx(math.log(b), abs=0.08)  # the bound log(b), up to sampling noise


def test_active_units_threshold_is_inclusive():
    means = torch.zeros(101, 3)
    means[:, 0] = torch.linspace(-1, 1, 101)  # variance ~0.34
    means[:, 1] = torch.linspace(-1, 1, 101) * 0.01  # variance ~3.4e-5
    au, var = active_units(means, threshold=0.01)
    assert au == 1 and var.shape == (3,)
    assert active_units(means, threshold=float(var[0]))[0] == 1


def test_evaluate_counts_tokens_and_is_reproducible():
    model = tiny_model()
    store = tiny_store(40)
    from seqvae.data.datamodule import eval_batches

    a = evaluate(model, eval_batches(store, VOCAB, 16), seed=3)
    b = evaluate(model, eval_batches(store, VOCAB, 16), seed=3)
    assert a == b
    assert a["n_sentences"] == 40 and a["n_tokens"] == store.num_tokens
    assert a["neg_elbo"] == pytest.approx(a["rec"] + a["kl"])
    assert a["ppl_elbo"] == pytest.approx(math.exp(a["neg_elbo"] * 40 / store.num_tokens), rel=1e-6)
    assert sum(a["kl_per_dim"]) == pytest.approx(a["kl"], rel=1e-6)
    assert model.training  # evaluate restores the mode


def test_a_long_evaluation_logs_its_progress(caplog):
    """``seqvae eval`` of K = 500 takes minutes: evaluate() logs batches done and the time left."""
    import logging

    from seqvae.data.datamodule import eval_batches

    batches = eval_batches(tiny_store(40), VOCAB, 8)  # 5 batches
    with caplog.at_level(logging.INFO, logger="seqvae.metrics"):
        quiet = evaluate(tiny_model(), batches, seed=3, iw_samples=3, progress_every=None)
        lines = [r.getMessage() for r in caplog.records if "evaluating" in r.getMessage()]
        assert lines == []
        loud = evaluate(tiny_model(), batches, seed=3, iw_samples=3, progress_every=0.0)
    lines = [r.getMessage() for r in caplog.records if "evaluating" in r.getMessage()]
    assert [m.split(" (")[0] for m in lines] == [f"evaluating: batch {i}/5" for i in range(1, 5)]
    assert all("s left" in m and "K = 3" in m for m in lines)
    assert loud["neg_elbo"] == quiet["neg_elbo"]  # logging changes nothing


@pytest.mark.slow
def test_short_training_run_learns_and_writes_its_folder(tmp_path):
    from seqvae.training import load_checkpoint, run_experiment

    raw = {**TINY, "decoder": "gru", "schedule": "linear",
           "data": {"dataset": {"kind": "synthetic", "n_sentences": 1200, "n_train": 1000, "n_valid": 100},
                    "batch_size": 32},
           "train": {"max_steps": 60, "lr": 0.01, "log_every": 10, "val_every": 30}}
    cfg = validate_experiment(raw)
    untrained = evaluate(build_model(cfg, Vocab([*SPECIALS, *(f"w{i}" for i in range(1000))])),
                         _test_batches(cfg, tmp_path))
    result = run_experiment(cfg, tmp_path / "run", cache_dir=tmp_path)
    m = result["metrics"]
    assert result["status"] == "ok" and result["steps"] == 60
    assert m["neg_elbo"] < untrained["neg_elbo"] - 5
    assert all(math.isfinite(m[k]) for k in ("neg_elbo", "rec", "kl", "mi"))
    run = tmp_path / "run"
    assert json.loads((run / "config.json").read_text())["decoder"]["kind"] == "gru"
    assert json.loads((run / "result.json").read_text())["metrics"] == m
    header = (run / "logs" / "metrics.csv").read_text().splitlines()[0]
    assert "train/loss" in header and "train/beta" in header and "val/neg_elbo" in header
    model, cfg2, vocab = load_checkpoint(run / "checkpoint.pt")
    assert cfg2 == cfg
    again = evaluate(model, _test_batches(cfg, tmp_path), seed=cfg.train.seed)
    assert again["neg_elbo"] == pytest.approx(m["neg_elbo"], rel=1e-6)


def _test_batches(cfg, cache):
    from seqvae.components.datasets.synthetic import SyntheticDataset
    from seqvae.data.datamodule import eval_batches

    corpus = SyntheticDataset(cfg.data.dataset).load(cache)
    return eval_batches(corpus.split("test"), corpus.vocab, cfg.data.eval_batch_size)


def test_kl_and_mi_match_hand_computed_values():
    from seqvae.components.priors.gaussian import GaussianPrior

    post = DiagonalGaussian(torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(4.0)]]))
    kl = GaussianPrior(GaussianPrior.Config(kind="gaussian"), None).kl(post).per_dim
    torch.testing.assert_close(kl, torch.tensor([[0.5, 0.5 * (3 - math.log(4.0))]]))
    # two unit-variance posteriors at -1 and +1, each sampled at its own mean:
    # MI = -H + log 2 - log(1 + e^-2) - 0.5 log(2 pi) + 0.5 log(2 pi) = log 2 - 0.5 - log(1 + e^-2)
    pair = DiagonalGaussian(torch.tensor([[-1.0], [1.0]]), torch.zeros(2, 1))
    mi = batch_mutual_information(pair, torch.tensor([[-1.0], [1.0]]))
    assert mi.item() == pytest.approx(math.log(2) - 0.5 - math.log(1 + math.exp(-2)), abs=1e-6)


def test_shuffle_gap_is_the_rolled_z_reconstruction_minus_the_plain_one():
    model = tiny_model()
    batch = tiny_store(8).batch(torch.arange(8), VOCAB)
    m = evaluate(model, [batch], seed=4)
    model.eval()
    with torch.no_grad():
        z = model.encode(batch).rsample(generator=batch_generator(4, 0))
        plain = model.reconstruction_nll(batch, z).mean()
        rolled = model.reconstruction_nll(batch, torch.roll(z, 1, 0)).mean()
    assert m["rec"] == pytest.approx(float(plain), rel=1e-5)
    assert m["shuffle_gap"] == pytest.approx(float(rolled - plain), abs=1e-4)


def test_language_model_baseline_has_no_latent_and_an_exact_nll():
    lm = tiny_model(encoder="none", prior="none")
    assert lm.ctx.latent_dim == 0
    assert lm.decoder.z_to_state is None and lm.decoder.rnn.input_size == 8  # z enters nowhere
    store = tiny_store(20)
    from seqvae.data.datamodule import eval_batches

    m = evaluate(lm, eval_batches(store, VOCAB, 8), iw_samples=50)
    assert m["kl"] == 0 and m["mi"] == 0 and m["au"] == 0 and m["shuffle_gap"] == 0
    assert m["iw_samples"] == 1 and m["iw_nll"] == pytest.approx(m["neg_elbo"], rel=1e-9)
    assert m["collapsed"] is None and "no latent" in m["collapse_rule"]
    out = lm(store.batch(torch.arange(4), VOCAB), beta=1.0)
    assert out.z.shape == (4, 0) and torch.all(out.kl == 0)
    out.loss.backward()  # trains as a plain language model
    assert lm.decoder.out.weight.grad.abs().sum() > 0


@pytest.mark.parametrize(("encoder", "prior"), [("none", "gaussian"), ("lstm", "none")])
def test_half_a_language_model_is_a_config_error(encoder, prior):
    from seqvae.config import ConfigError

    with pytest.raises(ConfigError, match="language-model baseline needs both 'none'"):
        validate_experiment({"encoder": encoder, "prior": prior})


def test_an_interrupted_evaluation_reuses_the_finished_training(tmp_path):
    """``resume``: a folder whose training finished (trained.json + checkpoint) is only evaluated."""
    from seqvae.training import run_experiment

    cfg = validate_experiment({**TINY, "data": {"dataset": {"kind": "synthetic", "n_sentences": 120, "n_train": 80,
                                                            "n_valid": 20, "vocab_size": 20, "length": 4}},
                               "train": {"max_steps": 6}, "eval": {"iw_samples": 3}})
    first = run_experiment(cfg, tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    stamp = ckpt.stat().st_mtime_ns
    (tmp_path / "run" / "result.json").unlink()  # as if killed during the evaluation
    again = run_experiment(cfg, tmp_path / "run", resume=True)
    assert ckpt.stat().st_mtime_ns == stamp  # not trained again
    assert again["train_seconds"] == first["train_seconds"] and again["metrics"] == first["metrics"]
    other = validate_experiment({**cfg.model_dump(mode="json"), "train": {"max_steps": 7}})
    run_experiment(other, tmp_path / "run", resume=True)
    assert ckpt.stat().st_mtime_ns != stamp  # another config: trained


@pytest.mark.parametrize("decoder", ["lstm", "gru"])
def test_blocked_evaluation_nll_equals_the_full_logits_one(decoder):
    """The NLL is computed fused, in row blocks, at real positions only: same numbers."""
    from seqvae.model import blocked_token_nll

    model = tiny_model(decoder=decoder).eval()
    batch = tiny_store(13).batch(torch.arange(13), VOCAB)  # lengths 1..8: plenty of padding
    z = torch.randn(13, 3)
    with torch.enable_grad():
        full = model.token_nll(model.decoder(batch.inputs, z, batch.lengths), batch).sum(-1)
    with torch.no_grad():
        blocked = model.reconstruction_nll(batch, z)
        feats = model.decoder.forward_features(batch.inputs, z, batch.lengths)
        tiny_blocks = blocked_token_nll(feats, model.decoder.output_layer(), batch.targets, VOCAB.pad_id, block=3)
    assert torch.allclose(blocked, full.detach(), atol=1e-5)
    assert torch.allclose(tiny_blocks.sum(-1), full.detach(), atol=1e-5)
    assert (tiny_blocks[batch.targets == VOCAB.pad_id] == 0).all()


def test_other_evaluation_settings_reuse_the_training_and_keep_the_earlier_result(tmp_path):
    """``resume`` with only ``eval`` changed: evaluated again, not trained; the old result is kept."""
    from seqvae.training import run_experiment

    raw = {**TINY, "data": {"dataset": {"kind": "synthetic", "n_sentences": 120, "n_train": 80, "n_valid": 20,
                                         "vocab_size": 20, "length": 4}},
           "train": {"max_steps": 6}, "eval": {"iw_samples": 3}}
    first = run_experiment(validate_experiment(raw), tmp_path / "run")
    ckpt = tmp_path / "run" / "checkpoint.pt"
    stamp = ckpt.stat().st_mtime_ns
    again = run_experiment(validate_experiment({**raw, "eval": {"iw_samples": 5}}), tmp_path / "run", resume=True)
    assert ckpt.stat().st_mtime_ns == stamp  # not trained again
    assert again["metrics"]["iw_samples"] == 5 and again["train_seconds"] == first["train_seconds"]
    kept = json.loads((tmp_path / "run" / "eval-test-k3.json").read_text())
    assert kept["metrics"] == first["metrics"]
    assert json.loads((tmp_path / "run" / "config.json").read_text())["eval"]["iw_samples"] == 5


@pytest.mark.parametrize("decoder", ["lstm", "dilated-cnn"])
def test_uniform_init_covers_encoder_and_decoder_and_nothing_else(decoder):
    """model.init=uniform: He et al.'s ranges on the encoder and decoder; the regularizer's BatchNorm
    and the prior keep their own initialisation, and padding rows stay zero."""
    raw = {"decoder": decoder, "prior": "mog", "regularizers": [{"kind": "bn-vae", "gamma": 0.6}]}
    default = tiny_model(**raw)
    model = tiny_model(**raw, model={**TINY["model"], "init": "uniform", "init_range": 0.02, "embed_init_range": 0.3})
    for part in (model.encoder, model.decoder):
        for sub in part.modules():
            for name, p in sub.named_parameters(recurse=False):
                if isinstance(sub, torch.nn.Embedding):
                    assert p[VOCAB.pad_id].abs().max() == 0
                    assert 0.02 < p.abs().max() <= 0.3, name  # the embedding range, not the weight range
                else:
                    assert p.abs().max() <= 0.02, name
    # untouched: the same seed gives the default model's prior and regularizer parameters
    for a, b in zip(default.prior.parameters(), model.prior.parameters(), strict=True):
        assert torch.equal(a, b)
    bn = model.regularizers[0].norm
    assert torch.allclose(bn.weight, torch.full_like(bn.weight, 0.6))


def test_init_rejects_an_unknown_scheme():
    with pytest.raises(ValueError, match="model.init"):
        validate_experiment({"model": {"init": "xavier"}})


def test_uniform_init_keeps_normalisation_layers():
    from seqvae.composer import uniform_init

    module = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    uniform_init(module, 0.01, 0.1)
    assert module[0].weight.abs().max() <= 0.01
    assert torch.equal(module[1].weight, torch.ones(4)) and torch.equal(module[1].bias, torch.zeros(4))
