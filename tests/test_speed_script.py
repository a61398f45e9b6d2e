"""benchmarks/speed/speed.py end to end with a few steps (slow: --runslow): the script runs against the
current model API (it broke once when ``SequenceVAE.forward`` began to require ``beta``) and its
numbers hang together. Timings are not asserted: speed lives in the benchmark, not in the tests."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest

from tests.scripts import load_script

PTB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"


@pytest.mark.slow
@pytest.mark.skipif(not (PTB_DIR / "ptb.test.txt").exists(), reason="shared PTB data not present")
def test_speed_script_reports_every_loop_the_ratios_and_the_iw_timing(tmp_path):
    speed = load_script("benchmarks/speed/speed.py")
    speed.matmul_peak = functools.partial(speed.matmul_peak, seconds=0.2)
    out, page = tmp_path / "out.json", tmp_path / "page.md"
    assert speed.main(["--data-dir", str(PTB_DIR), "--models", "ptb-suite", "--steps", "3", "--warmup", "1",
                       "--rounds", "1", "--iw-samples", "3", "--iw-sentences", "128", "--batch-sizes",
                       "--json", str(out), "--page", str(page)]) == 0
    res = json.loads(out.read_text())
    r = res["models"]["ptb-suite"]
    assert res["peak_bf16"] > 0 and res["peak_fp32"] > 0
    for loop in speed.LOOPS:
        assert r[loop]["tokens_per_s"] > 0
        assert r[loop]["of_bf16_peak"] == pytest.approx(r[loop]["gflops"] / res["peak_bf16"])
    assert r["c_fast_over_b_fp32"] == pytest.approx(r["c_fast"]["tokens_per_s"] / r["b_fp32"]["tokens_per_s"])
    # two evenly spaced batches of 64 from the length-sorted test split: the later one holds longer sentences
    assert r["iw_bf16"]["sentences"] == r["iw_fp32"]["sentences"] == 128
    assert r["iw_bf16"]["tokens"] > 128 * 10
    # bf16 against fp32 on the same model and samples: the benchmark's own check of the fast precision
    assert abs(r["iw_bf16_minus_fp32"]) < 0.5
    bd = r["breakdown_fast"]
    assert bd["other"] == pytest.approx(bd["step"] - bd["recurrence"] - bd["vocab_ce"] - bd["optimizer"] - bd["data"])
    text = page.read_text()
    assert "c_fast / b_fp32 = **" in text and "## IW-NLL" in text
