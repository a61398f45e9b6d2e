"""The grid runner that `seqvae bench` and the quality benchmarks share: folder names, reuse of
finished runs found elsewhere, rows reported as they are known, in grid order."""

from __future__ import annotations

import json

import pytest

import seqvae.training
from seqvae.bench.runner import read_grid, run_grid
from seqvae.config import validate_experiment
from seqvae.run_dir import GRID_FILE, RESULTS_FILE

DATA = {"dataset": {"kind": "synthetic", "n_sentences": 120, "n_train": 80, "n_valid": 20, "vocab_size": 20,
                    "length": 5}, "batch_size": 10, "eval_batch_size": 20}


def _cfg(schedule: str):
    return validate_experiment({"model": {"latent_dim": 2, "embed_dim": 8, "hidden_size": 8}, "data": DATA,
                                "schedule": schedule, "eval": {"iw_samples": 2},
                                "train": {"max_steps": 3, "checkpoint_every": None}})


def _must_not_train(*args, **kwargs):
    raise AssertionError("a finished run was trained again")


def test_named_cells_are_reused_from_another_folder_and_reported_in_grid_order(tmp_path, monkeypatch):
    configs = [_cfg("constant"), _cfg("sigmoid")]
    first = run_grid(configs, tmp_path / "a", names=["const", "sig"])
    assert [r["status"] for r in first] == ["ok", "ok"]
    assert sorted(p.name for p in (tmp_path / "a").iterdir() if p.is_dir()) == ["const", "sig"]
    stored, names = read_grid(tmp_path / "a")
    assert names == ["const", "sig"] and [c.schedule.kind for c in stored] == ["constant", "sigmoid"]

    # a new output folder whose cells are finished elsewhere: nothing trains; the order is the grid's
    monkeypatch.setattr(seqvae.training, "run_experiment", _must_not_train)
    seen = []
    again = run_grid(configs[::-1], tmp_path / "b", names=["s", "c"], reuse=[tmp_path / "a"], resume=True,
                     on_result=lambda row: seen.append(row["run_dir"]))
    assert [r["run_dir"] for r in again] == [str(tmp_path / "a" / "sig"), str(tmp_path / "a" / "const")]
    assert seen == [r["run_dir"] for r in again]
    assert [r["metrics"] for r in again] == [r["metrics"] for r in first[::-1]]
    lines = (tmp_path / "b" / RESULTS_FILE).read_text().splitlines()
    assert [json.loads(line)["run_dir"] for line in lines] == seen


def test_a_cell_with_another_config_is_not_reused(tmp_path, monkeypatch):
    run_grid([_cfg("constant")], tmp_path / "a", names=["x"])
    monkeypatch.setattr(seqvae.training, "run_experiment", _must_not_train)
    (row,) = run_grid([_cfg("sigmoid")], tmp_path / "b", names=["x"], reuse=[tmp_path / "a"], resume=True)
    assert row["status"] == "failed" and "trained again" in row["error"]  # it had to train


def test_names_must_be_one_per_cell_and_distinct(tmp_path):
    with pytest.raises(ValueError, match="one distinct folder name per config"):
        run_grid([_cfg("constant"), _cfg("sigmoid")], tmp_path, names=["x", "x"])
    assert not (tmp_path / GRID_FILE).exists()


def test_a_grid_file_without_names_gets_the_default_names(tmp_path):
    from seqvae.bench.runner import cell_name

    cfg = _cfg("constant")
    (tmp_path / GRID_FILE).write_text(json.dumps({"format": "seqvae-grid/1", "cells": [cfg.model_dump(mode="json")]}))
    assert read_grid(tmp_path)[1] == [cell_name(0, cfg)]
