"""The PTB benchmark command of the metric-suite issue, on the real PTB files (slow: --runslow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from seqvae.cli import app

PTB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


@pytest.mark.slow
@pytest.mark.skipif(not (PTB_DIR / "ptb.test.txt").exists(), reason="shared PTB data not present")
def test_ptb_bench_200_steps_reports_the_metric_set(tmp_path):
    """About 5 minutes on 2 cores: 200 training steps, then IW-NLL with K = 50 on all of PTB test."""
    res = CliRunner().invoke(app, [
        "bench", "--suite", "ptb", "--data-dir", str(PTB_DIR), "--decoder", "lstm", "--schedule", "sigmoid",
        "--max-steps", "200", "--iw-samples", "50", "--json", "--out", str(tmp_path / "b"),
    ])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    m = row["metrics"]
    assert {"elbo", "rec", "kl", "iw_nll", "ppl_iw", "ppl_elbo", "mi", "au", "shuffle_gap", "collapsed"} <= set(m)
    assert m["n_sentences"] == 3_761 and m["n_tokens"] == 82_430 and m["iw_samples"] == 50
    assert m["iw_nll"] <= m["neg_elbo"] + 0.5  # IW never far above the one-sample ELBO
    assert 100 < m["neg_elbo"] < 200  # 200 steps: far from trained, far from uniform (82430/3761 * log 10002 = 202)
