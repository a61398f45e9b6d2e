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
    rm = r["room"]
    assert rm["bound"] == pytest.approx(bd["recurrence"] + bd["optimizer"] + rm["vocab_floor"])
    text = page.read_text()
    assert "c_fast / b_fp32 = **" in text and "## IW-NLL" in text and f"**{rm['bound']:.1f}**" in text
    # the page again from the JSON, measuring nothing: the same text
    again = tmp_path / "again.md"
    assert speed.main(["--from-json", str(out), "--page", str(again)]) == 0
    assert again.read_text() == text


def _result(tokens_per_step=700.0, recurrence=30.0, optimizer=10.0, b_fp32=4000.0):
    """A model's entry of the script's JSON with just what ``target_room`` reads."""
    spec = {"cell": "lstm", "embed": 256, "hidden": 256, "latent": 32}
    speed = load_script("benchmarks/speed/speed.py")
    return speed, {"spec": spec, "train_flops_per_token": speed.train_flops_per_token(spec, 10_000),
                   "b_fp32": {"tokens_per_s": b_fp32},
                   "breakdown_fast": {"tokens_per_step": tokens_per_step, "step": 80.0, "recurrence": recurrence,
                                      "optimizer": optimizer}}


def test_target_room_puts_the_vocabulary_products_at_the_floor_and_each_target_at_its_step_time():
    speed, r = _result()
    room = speed.target_room(r, peak_bf16=1000.0, epoch_tokens=900_000)
    # 3 x 2 x 256 x 10,000 FLOPs per token x 700 tokens at 1,000 GFLOP/s
    assert room["vocab_floor"] == pytest.approx(3 * 2 * 256 * 10_000 * 700 / 1e12 * 1e3)
    assert room["bound"] == pytest.approx(40.0 + room["vocab_floor"])
    assert room["need_3x"] == pytest.approx(700 / 12_000 * 1e3)  # 3 x 4,000 tokens/s
    assert room["need_25pct"] == pytest.approx(700 * r["train_flops_per_token"] / 250e9 * 1e3)
    assert room["need_60s_epoch"] == pytest.approx(700 * 60 / 900_000 * 1e3)
    # a faster recurrence lowers the bound by as much; a faster lean loop shortens the 3x step
    assert speed.target_room(_result(recurrence=20.0)[1], 1000.0, 900_000)["bound"] == pytest.approx(room["bound"] - 10)
    assert speed.target_room(_result(b_fp32=8000.0)[1], 1000.0, 900_000)["need_3x"] == pytest.approx(room["need_3x"] / 2)


def test_from_json_with_a_missing_or_broken_file_is_one_line_naming_it_and_exit_2(tmp_path, capsys):
    speed = load_script("benchmarks/speed/speed.py")
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    for path in (tmp_path / "missing.json", broken):
        assert speed.main(["--from-json", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: --from-json {path}:") and "\n" not in err
