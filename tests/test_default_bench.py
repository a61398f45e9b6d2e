"""The headline command with its defaults: the synthetic suite, 4,000 steps, IW-NLL with K = 500
(about 80 s on 2 cores)."""

from __future__ import annotations

import json
import math

import pytest
from typer.testing import CliRunner

from seqvae.cli import app


@pytest.mark.slow
def test_default_bench_lstm_sigmoid_learns_a_used_latent(tmp_path):
    res = CliRunner().invoke(app, ["bench", "--decoder", "lstm", "--schedule", "sigmoid", "--json",
                                   "--out", str(tmp_path / "b")])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    m = row["metrics"]
    assert row["steps"] == 4000 and row["dataset"] == "synthetic"
    assert all(math.isfinite(m[k]) for k in ("neg_elbo", "rec", "kl", "mi", "ppl_elbo", "iw_nll", "ppl_iw"))
    assert m["iw_samples"] == 500 and m["iw_nll"] <= m["neg_elbo"]
    assert m["shuffle_gap"] > 1.0  # decoding from another sentence's z costs nats: the decoder uses z
    # The generator makes sentences depend strongly on z; with sigmoid annealing the 2-d latent is used.
    # An untrained model scores -ELBO ~ 11 * log(1004) = 76; an LSTM LM on this data ~ 40.
    assert m["neg_elbo"] < 45
    assert m["au"] >= 1 and m["kl"] > 0.5 and row["collapsed"] is False
