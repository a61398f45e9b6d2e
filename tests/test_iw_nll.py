"""IW-NLL against the exact likelihood of a model with a 1-d latent, where log p(x) is a 1-d integral."""

from __future__ import annotations

import math

import pytest
import torch

from seqvae.composer import build_model
from seqvae.config import validate_experiment
from seqvae.data.corpus import TokenStore
from seqvae.data.vocab import SPECIALS, Vocab
from seqvae.metrics import evaluate, iw_log_likelihood

VOCAB = Vocab([*SPECIALS, "a", "b", "c"])


@pytest.fixture(scope="module")
def setup():
    torch.manual_seed(3)
    cfg = validate_experiment({"model": {"latent_dim": 1, "embed_dim": 4, "hidden_size": 6}, "decoder": "gru"})
    model = build_model(cfg, VOCAB).eval()
    store = TokenStore.from_lists([[4], [5, 6], [6, 4, 4]])
    batch = store.batch(torch.arange(3), VOCAB)
    # exact log p(x) = log of the integral of N(z; 0, 1) p(x|z) dz, by quadrature on a fine grid
    grid = torch.linspace(-12, 12, 24001)
    dz = float(grid[1] - grid[0])
    with torch.no_grad():
        rows = []
        for zs in grid.split(4000):
            b = store.batch(torch.arange(3).repeat(len(zs)), VOCAB)
            z = zs.repeat_interleave(3)[:, None]
            rows.append(-model.reconstruction_nll(b, z).view(len(zs), 3) + model.prior.log_prob(zs[:, None])[:, None])
        exact = torch.logsumexp(torch.cat(rows), 0) + math.log(dz)
    return model, batch, exact


def test_iw_converges_to_the_exact_likelihood(setup):
    model, batch, exact = setup
    g = torch.Generator().manual_seed(0)
    est = iw_log_likelihood(model, batch, 20_000, generator=g)
    torch.testing.assert_close(est, exact, atol=0.02, rtol=0)


@pytest.mark.slow
def test_iw_is_below_the_elbo_and_tightens_with_k(setup):
    model, batch, exact = setup
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        post = model.encode(batch)
        z = post.rsample(20_000, generator=g)  # k b d
        rec = torch.stack([model.reconstruction_nll(batch, zk) for zk in z[:2000]])
        neg_elbo = rec.mean(0) + model.prior.kl(post).per_dim.sum(-1)  # E_q[-log p(x|z)] + KL
    nll = {k: -torch.stack([iw_log_likelihood(model, batch, k, generator=g) for _ in range(300 if k < 100 else 3)]).mean(0)
           for k in (1, 10, 1000)}
    assert torch.all(nll[1] >= nll[10] - 0.02) and torch.all(nll[10] >= nll[1000] - 0.02)
    assert torch.all(nll[1000] <= neg_elbo + 1e-3)
    assert torch.all(nll[1000] >= -exact - 0.03)
    torch.testing.assert_close(nll[1], neg_elbo, atol=0.15, rtol=0)  # K = 1 is the ELBO in expectation


def test_chunking_does_not_change_the_estimate(setup):
    model, batch, _ = setup
    a = iw_log_likelihood(model, batch, 64, generator=torch.Generator().manual_seed(5))
    b = iw_log_likelihood(model, batch, 64, generator=torch.Generator().manual_seed(5), max_chunk_elements=1)
    torch.testing.assert_close(a, b)


def test_evaluate_reports_iw_ppl_and_shuffle_gap(setup):
    model, batch, exact = setup
    store = TokenStore.from_lists([[4], [5, 6], [6, 4, 4]])
    m = evaluate(model, [batch], iw_samples=2000)
    assert m["iw_nll"] == pytest.approx(float(-exact.mean()), abs=0.05)
    assert m["ppl_iw"] == pytest.approx(math.exp(m["iw_nll"] * 3 / store.num_tokens), rel=1e-9)
    assert m["iw_samples"] == 2000
    # shuffle gap: the decoder is not trained, so z matters only a little, but the value is defined
    assert math.isfinite(m["shuffle_gap"])
