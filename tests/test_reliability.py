"""No lost runs: resume after SIGKILL, a failing or NaN cell in a grid, reruns, provenance, no code from files."""

from __future__ import annotations

import csv
import json
import math
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from seqvae.cli import app
from seqvae.config import validate_experiment

runner = CliRunner()

# Small enough for seconds, long enough (hundreds of steps) that a kill lands mid-run; sigmoid
# annealing, word dropout and validation make every restored piece of state matter.
RAW = {
    "model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 12},
    "data": {"dataset": {"kind": "synthetic", "n_sentences": 300, "n_train": 200, "n_valid": 50, "vocab_size": 20,
                         "length": 5, "embed_dim": 8, "hidden_size": 8}, "batch_size": 16},
    "schedule": "sigmoid",
    "regularizers": [{"kind": "word-dropout", "rate": 0.3}],
    "train": {"max_steps": 40, "checkpoint_every": 10, "val_every": 7, "log_every": 3},
    "eval": {"iw_samples": 3},
}


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


class _Cut(Exception):
    """Stands for a crash at a chosen step."""


@pytest.fixture
def crash_at(monkeypatch):
    """``crash_at(step)``: the next training raises right after the checkpoint callback of ``step``."""
    import seqvae.training as T

    original = T.ResumeCheckpoint.on_train_batch_end

    def arm(step: int) -> None:
        def patched(self, trainer, module, *args):
            original(self, trainer, module, *args)
            if trainer.global_step == step:
                monkeypatch.setattr(T.ResumeCheckpoint, "on_train_batch_end", original)
                raise _Cut(step)

        monkeypatch.setattr(T.ResumeCheckpoint, "on_train_batch_end", patched)

    return arm


@pytest.mark.slow
@pytest.mark.parametrize(("strategy", "cut", "every"), [
    ("standard", 23, 10),
    ("standard", 26, 13),  # the last batch of epoch 2 (13 batches per epoch): Lightning asks for a new iterator
    ("aggressive", 13, 10),
    ("ae-pretrain", 25, 10),
], ids=["mid-epoch", "epoch-end", "aggressive", "ae-pretrain"])
def test_a_crashed_run_resumes_to_the_metrics_of_a_straight_run(tmp_path, crash_at, strategy, cut, every):
    """Step, optimizer, strategy (aggressive: its own optimizer and phase; ae-pretrain: the switch),
    RNG and data order come back: the resumed run's metrics and curves equal the straight run's."""
    from seqvae.training import RESUME_FILE, run_experiment

    raw = {**RAW, "strategy": strategy, "train": {**RAW["train"], "checkpoint_every": every}}
    if strategy == "aggressive":
        raw["strategy"] = {"kind": "aggressive", "check_every": 15, "max_inner_steps": 6, "window": 2}
    cfg = validate_experiment(raw)
    straight = run_experiment(cfg, tmp_path / "straight")
    crash_at(cut)
    with pytest.raises(_Cut):
        run_experiment(cfg, tmp_path / "cut")
    assert (tmp_path / "cut" / RESUME_FILE).exists() and not (tmp_path / "cut" / "result.json").exists()
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True)
    assert resumed["resumed"] is True and resumed["steps"] == straight["steps"] == 40
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["strategy_state"] == straight["strategy_state"]
    if strategy == "aggressive":  # the cut fell inside the aggressive phase
        assert straight["strategy_state"]["aggressive_ended_at_step"] is None or \
            straight["strategy_state"]["aggressive_ended_at_step"] > cut
    assert _csv(tmp_path / "cut" / "logs" / "metrics.csv") == _csv(tmp_path / "straight" / "logs" / "metrics.csv")
    assert not (tmp_path / "cut" / RESUME_FILE).exists()  # the end of training removes it


def test_a_resumed_run_records_the_threads_steps_and_seconds_of_each_part(tmp_path, crash_at):
    """``trained.json``'s ``sessions``: a run cut at step 13 (last checkpoint 10) with one thread and resumed
    with two has two parts, 10 steps on 1 thread and 30 on 2, whose seconds add up to ``train_seconds``."""
    import torch

    from seqvae.training import run_experiment

    cfg = validate_experiment(RAW)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        crash_at(13)
        with pytest.raises(_Cut):
            run_experiment(cfg, tmp_path / "run")
        torch.set_num_threads(2)
        resumed = run_experiment(cfg, tmp_path / "run", resume=True)
    finally:
        torch.set_num_threads(threads)
    parts = resumed["sessions"]
    assert [(p["threads"], p["steps"]) for p in parts] == [(1, 10), (2, 30)]
    assert sum(p["seconds"] for p in parts) == pytest.approx(resumed["train_seconds"], abs=0.5)
    assert json.loads((tmp_path / "run" / "trained.json").read_text())["sessions"] == parts


KILL_RAW = {**RAW, "train": {**RAW["train"], "max_steps": 600, "checkpoint_every": 25, "val_every": 150,
                            "log_every": 20}}
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def straight_cli_run(tmp_path_factory) -> tuple[Path, dict]:
    """``seqvae train`` of KILL_RAW, uninterrupted: (its config file, its JSON result)."""
    folder = tmp_path_factory.mktemp("straight")
    cfg = folder / "exp.yaml"
    cfg.write_text(yaml.safe_dump(KILL_RAW))
    res = subprocess.run([sys.executable, "-m", "seqvae", "train", "--config", str(cfg), "--out", str(folder / "run"),
                          "--json"], capture_output=True, text=True, env=ENV, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    return cfg, json.loads(res.stdout)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT], ids=["SIGKILL", "SIGTERM", "Ctrl-C"])
def test_a_killed_cli_run_resumes_to_the_metrics_of_a_straight_run(tmp_path, straight_cli_run, sig):
    """The real thing: ``seqvae train`` is killed mid-run and ``seqvae train --resume`` finishes it.

    SIGKILL loses the steps since the last periodic checkpoint; SIGTERM (a cluster's pre-emption)
    saves the state of the step in progress and exits 143 with the command that continues; Ctrl-C
    (SIGINT) does the same and exits 130.
    """
    cfg, straight = straight_cli_run
    killed = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "seqvae", "train", "--config", str(cfg), "--out", str(killed)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV)
    deadline = time.monotonic() + 300
    while not (killed / "resume.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.2)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert (killed / "resume.ckpt").exists() and not (killed / "result.json").exists(), "the kill came too late"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL
    elif sig == signal.SIGINT:
        assert proc.returncode == 130 and "stopped by Ctrl-C" in stderr and f"--resume {killed}" in stderr
    else:
        assert proc.returncode == 143 and "stopped by SIGTERM" in stderr and f"--resume {killed}" in stderr
    resumed = subprocess.run([sys.executable, "-m", "seqvae", "train", "--resume", str(killed), "--json"],
                             capture_output=True, text=True, env=ENV, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    b = json.loads(resumed.stdout)
    assert b["resumed"] is True and b["steps"] == straight["steps"] == 600
    assert b["metrics"] == straight["metrics"]
    assert _csv(killed / "logs" / "metrics.csv") == _csv(Path(straight["run_dir"]) / "logs" / "metrics.csv")


def _nan_regularizer():
    """A regularizer whose KL term turns NaN at step 4: the loss diverges, no contract is broken.

    (A schedule returning NaN is caught earlier, as a broken component: see test_testing_kit.py.)
    """
    from seqvae.components.regularizers.free_bits import FreeBits
    from seqvae.registry import get_registry

    class NaNAfterFour(FreeBits):
        def transform_kl(self, kl_per_dim, step):
            return kl_per_dim * float("nan") if step >= 4 else kl_per_dim

    get_registry("regularizer").register("nan-after-four", NaNAfterFour)


FAST = ["--max-steps", "8", "--iw-samples", "5", "--set", "data.dataset.n_sentences=300", "--set",
        "data.dataset.n_train=200", "--set", "data.dataset.n_valid=50", "--set", "data.batch_size=32"]


def test_a_nan_cell_fails_with_its_step_and_the_grid_finishes_the_others(tmp_path, fresh_registries):
    _nan_regularizer()
    res = runner.invoke(app, ["bench", "--regularizer", "free-bits", "--regularizer", "nan-after-four", "--regularizer",
                              "word-dropout", "--out", str(tmp_path / "g"), *FAST])
    assert res.exit_code == 1
    assert "failed" in res.output and "NonFiniteLossError" in res.output  # the table shows the cause
    rows = [json.loads(x) for x in (tmp_path / "g" / "results.jsonl").read_text().splitlines()]
    assert [r["status"] for r in rows] == ["ok", "failed", "ok"]
    error = rows[1]["error"]
    assert "the training loss is nan at step 4" in error and "last finite at step 3" in error
    assert all(r["metrics"]["neg_elbo"] > 0 for r in (rows[0], rows[2]))


@pytest.mark.slow
def test_bench_resume_keeps_finished_cells_and_resumes_the_interrupted_one(tmp_path, crash_at):
    grid = ["--schedule", "constant", "--schedule", "sigmoid", "--set", "train.checkpoint_every=3", *FAST]
    straight = runner.invoke(app, ["bench", *grid, "--out", str(tmp_path / "s"), "--json"])
    assert straight.exit_code == 0, straight.output
    crash_at(5)  # the first cell that reaches step 5 crashes; pytest.raises is not needed: the grid records it
    first = runner.invoke(app, ["bench", *grid, "--out", str(tmp_path / "g"), "--json"])
    assert first.exit_code == 1 and [r["status"] for r in json.loads(first.stdout)] == ["failed", "ok"]
    done = next((tmp_path / "g").glob("001-*")) / "result.json"
    stamp = done.stat().st_mtime_ns
    again = runner.invoke(app, ["bench", *grid, "--out", str(tmp_path / "g")])
    assert again.exit_code == 2 and "--resume" in again.output  # never silently over another bench
    resumed = runner.invoke(app, ["bench", "--resume", str(tmp_path / "g"), "--json"])
    assert resumed.exit_code == 0, resumed.output
    rows = json.loads(resumed.stdout)
    assert done.stat().st_mtime_ns == stamp  # the finished cell was kept, not run again
    assert rows[0]["resumed"] is True
    assert [r["metrics"] for r in rows] == [r["metrics"] for r in json.loads(straight.stdout)]
    assert len((tmp_path / "g" / "results.jsonl").read_text().splitlines()) == 2


def test_rerun_reproduces_a_run_and_reports_a_difference(tmp_path):
    res = runner.invoke(app, ["bench", "--schedule", "sigmoid", "--seed", "3", "--out", str(tmp_path / "g"), "--json",
                              *FAST])
    assert res.exit_code == 0, res.output
    (row,) = json.loads(res.stdout)
    run = Path(row["run_dir"])
    # the run folder alone says what produced it
    stored = json.loads((run / "result.json").read_text())
    assert {"seqvae", "torch", "lightning", "python"} <= set(stored["versions"])
    assert isinstance(stored["plugins"], dict) and stored["seed"] == 3 and stored["command"]  # sys.argv
    assert validate_experiment(json.loads((run / "config.json").read_text())).train.seed == 3
    again = runner.invoke(app, ["bench", "--rerun", str(run), "--out", str(tmp_path / "r"), "--json"])
    assert again.exit_code == 0, again.output
    report = json.loads(again.stdout)
    assert report["reproduced"] is True and report["differences"] == []
    assert json.loads((tmp_path / "r" / "result.json").read_text())["metrics"] == stored["metrics"]
    stored["metrics"]["kl"] += 0.5  # as if the published number were not what this config gives
    (run / "result.json").write_text(json.dumps(stored))
    differ = runner.invoke(app, ["bench", "--rerun", str(run), "--out", str(tmp_path / "r"), "--overwrite", "--json"])
    assert differ.exit_code == 1
    assert [d["metric"] for d in json.loads(differ.stdout)["differences"]] == ["kl"]


def test_a_malicious_resume_checkpoint_is_refused_without_running_it(tmp_path):
    """``resume.ckpt`` is loaded with ``weights_only``: a pickled payload is an error, never executed."""

    class Marker:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "PWNED",))

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(validate_experiment(RAW).model_dump(mode="json")))
    (run / "resume.ckpt").write_bytes(pickle.dumps({"global_step": 3, "x": Marker()}, protocol=2))
    res = runner.invoke(app, ["train", "--resume", str(run)])
    assert res.exit_code == 2 and "resume.ckpt" in res.output and "not a readable" in res.output
    assert not (tmp_path / "PWNED").exists()


def test_a_malicious_yaml_config_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "PWNED"
    evil = tmp_path / "evil.yaml"
    evil.write_text(f"decoder: !!python/object/apply:pathlib.Path.touch [!!python/object/apply:pathlib.Path "
                    f"['{marker}']]\n")
    res = runner.invoke(app, ["train", "--config", str(evil), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "evil.yaml" in res.output
    assert not marker.exists() and not (tmp_path / "o").exists()


@pytest.mark.slow
def test_two_process_ddp_matches_one_process_with_the_same_global_batch(tmp_path):
    """``--devices 2`` on CPU (DDP over gloo): each process takes half of every global batch and the
    gradients are averaged, so the run sees the same tokens and ends near the one-process run."""
    raw = {**RAW, "regularizers": [], "train": {"max_steps": 60, "val_every": 20, "log_every": 10}}
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    runs = {}
    for devices in (1, 2):
        res = subprocess.run([sys.executable, "-m", "seqvae", "train", "--config", str(cfg), "--devices", str(devices),
                              "--out", str(tmp_path / f"d{devices}"), "--json"],
                             capture_output=True, text=True, env=ENV, timeout=600)
        assert res.returncode == 0, res.stderr[-3000:]
        runs[devices] = json.loads(res.stdout)
    one, two = runs[1], runs[2]
    assert two["world_size"] == 2 and one["world_size"] == 1 and two["steps"] == one["steps"] == 60
    assert two["train_tokens"] == one["train_tokens"]  # the global batches, split, not duplicated
    for key in ("neg_elbo", "rec", "iw_nll"):
        assert two["metrics"][key] == pytest.approx(one["metrics"][key], rel=0.02), key
    assert len(list((tmp_path / "d2").glob("result.json"))) == 1  # one process wrote the folder


def test_an_interrupted_evaluation_continues_from_its_last_batch(tmp_path, monkeypatch):
    """The K-sample evaluation saves its running sums after every batch: a crash in batch 3 of 4
    costs batches 3 and 4 only, and the result equals an uninterrupted evaluation."""
    import seqvae.metrics as M
    from seqvae.training import run_experiment

    raw = {**RAW, "data": {**RAW["data"], "eval_batch_size": 8}, "train": {**RAW["train"], "max_steps": 12}}
    cfg = validate_experiment(raw)
    straight = run_experiment(cfg, tmp_path / "run")
    (tmp_path / "run" / "result.json").unlink()
    calls = {"n": 0}
    original = M.iw_log_likelihood

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("killed during the evaluation")
        return original(*args, **kwargs)

    monkeypatch.setattr(M, "iw_log_likelihood", crash_on_third)
    with pytest.raises(RuntimeError, match="killed during"):
        run_experiment(cfg, tmp_path / "run", resume=True)
    partial = list((tmp_path / "run").glob("eval-partial-*.pt"))
    assert len(partial) == 1  # two batches' sums are safe on disk
    monkeypatch.setattr(M, "iw_log_likelihood", original)
    seen = []
    monkeypatch.setattr(M, "iw_log_likelihood", lambda *a, **k: seen.append(1) or original(*a, **k))
    again = run_experiment(cfg, tmp_path / "run", resume=True)
    assert again["eval_resumed_batches"] == 2 and len(seen) == again["metrics"]["n_sentences"] // 8 - 2 + \
        (again["metrics"]["n_sentences"] % 8 > 0)
    assert again["metrics"] == straight["metrics"]
    assert not list((tmp_path / "run").glob("eval-partial-*.pt"))


def test_bf16_mixed_training_with_gradient_clipping_runs(tmp_path):
    """bf16-mixed with the fused Adam and clipping (Lightning's plugin refuses to clip for fused optimizers)."""
    from seqvae.training import run_experiment

    cfg = validate_experiment({**RAW, "train": {"max_steps": 6, "precision": "bf16-mixed", "grad_clip": 1.0}})
    result = run_experiment(cfg, tmp_path / "run")
    assert result["steps"] == 6 and all(math.isfinite(result["metrics"][k]) for k in ("neg_elbo", "iw_nll"))


def test_a_resume_checkpoint_of_another_model_size_is_one_line_exit_2(tmp_path, crash_at):
    """``resume.ckpt`` from a run of other sizes in a run folder (a copied file): ``train --resume``
    says the weights do not fit, in one line with exit 2, and keeps the folder as it was."""
    from seqvae.training import RESUME_FILE, run_experiment

    small = validate_experiment({**RAW, "model": {**RAW["model"], "hidden_size": 6}})
    crash_at(10)
    with pytest.raises(_Cut):
        run_experiment(small, tmp_path / "small")
    crash_at(10)
    with pytest.raises(_Cut):
        run_experiment(validate_experiment(RAW), tmp_path / "run")
    (tmp_path / "run" / RESUME_FILE).write_bytes((tmp_path / "small" / RESUME_FILE).read_bytes())
    res = runner.invoke(app, ["train", "--resume", str(tmp_path / "run")])
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert res.exit_code == 2 and len(errors) == 1 and "Traceback" not in res.output, res.output
    assert "resume.ckpt" in errors[0] and "do not fit" in errors[0] and "size mismatch" in errors[0]
    assert "--overwrite" in errors[0]
    assert (tmp_path / "run" / RESUME_FILE).exists()  # nothing thrown away
