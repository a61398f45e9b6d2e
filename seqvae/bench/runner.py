"""Run a grid of experiment configs, one run folder per cell, appending to ``results.jsonl``."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any, Callable

from seqvae.config import ExperimentConfig

__all__ = ["cell_name", "dataset_key", "finished_result", "load_corpora", "run_grid"]

log = logging.getLogger(__name__)


def cell_name(index: int, cfg: ExperimentConfig) -> str:
    """A readable, unique folder name for grid cell ``index``."""
    n = cfg.component_names()
    regs = "+".join(n["regularizers"]) or "none"
    strategy = "" if n["strategy"] == "standard" else f"-{n['strategy']}"
    return f"{index:03d}-{n['encoder']}-{n['decoder']}-{n['prior']}-{n['schedule']}-{regs}{strategy}-s{cfg.train.seed}"


def dataset_key(cfg: ExperimentConfig) -> str:
    """Identifies the data set of ``cfg`` (cells with equal keys share one loaded corpus)."""
    return json.dumps(cfg.data.dataset.model_dump(mode="json"), sort_keys=True)


def finished_result(run_dir: str | Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """The ``result.json`` of a finished run of ``cfg`` in ``run_dir``; None if absent, failed or another config.

    The stored ``config.json`` is validated again with today's defaults before the comparison, so a
    config field added later, whose default keeps the old behaviour, does not disown older runs.
    """
    from seqvae.config import ConfigError, validate_experiment

    run_dir = Path(run_dir)
    try:
        result = json.loads((run_dir / "result.json").read_text())
        stored = validate_experiment(json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError, ConfigError):
        return None
    if result.get("status") != "ok" or stored.model_dump(mode="json") != cfg.model_dump(mode="json"):
        return None
    return result


def load_corpora(
    configs: list[ExperimentConfig], cache_dir: str | Path | None = None, corpora: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Each distinct data set of ``configs`` loaded once, keyed by :func:`dataset_key` (``corpora`` is filled in).

    Raises:
        seqvae.data.corpora.CorpusError: bad corpus input, naming the file and line.
    """
    from seqvae.training import load_corpus

    corpora = {} if corpora is None else corpora
    for cfg in configs:
        key = dataset_key(cfg)
        if key not in corpora:
            corpora[key] = load_corpus(cfg.data.dataset, cache_dir)
    return corpora


def run_grid(
    configs: list[ExperimentConfig],
    out_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    corpora: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Train and evaluate every config; a failing cell is recorded (status ``failed``) and the grid goes on.

    Each distinct data set is loaded once and shared by the cells that use it; ``corpora`` may
    hold some already loaded, keyed by :func:`dataset_key`.
    """
    from seqvae.training import run_experiment

    corpora = dict(corpora or {})

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, cfg in enumerate(configs):
        run_dir = out_dir / cell_name(i, cfg)
        log.info("cell %d/%d: %s", i + 1, len(configs), run_dir.name)
        try:
            corpus = load_corpora([cfg], cache_dir, corpora)[dataset_key(cfg)]
            row = run_experiment(cfg, run_dir, cache_dir=cache_dir, progress=progress, corpus=corpus)
        except Exception as exc:  # one failed cell must not cost the rest of the grid
            log.error("cell %s failed: %s", run_dir.name, exc)
            log.debug("%s", traceback.format_exc())
            names = cfg.component_names()
            row = {**names, "seed": cfg.train.seed, "metrics": None, "collapsed": None,
                   "components": {}, "run_dir": str(run_dir), "status": "failed",
                   "error": f"{type(exc).__name__}: {exc}"}
        with open(out_dir / "results.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        rows.append(row)
        if on_result:
            on_result(row)
    return rows
