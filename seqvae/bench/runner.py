"""Run a grid of experiment configs, one run folder per cell, appending to ``results.jsonl``."""

from __future__ import annotations

import json
import logging
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from seqvae.config import ExperimentConfig
from seqvae.run_dir import GRID_FILE, RESULTS_FILE, RunDir, atomic_write_json

__all__ = ["GRID_FILE", "cell_name", "compare_metrics", "dataset_key", "failed_row", "find_finished", "finished_result",
           "load_corpora", "read_grid", "rerun", "run_cell", "run_grid", "write_grid"]

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
    """The ``result.json`` of a finished run of ``cfg`` in ``run_dir``; None if absent, failed or another config
    (see [`finished_result`][seqvae.run_dir.RunDir.finished_result])."""
    return RunDir(run_dir).finished_result(cfg)


def find_finished(cfg: ExperimentConfig, run_dir: str | Path, reuse: Sequence[str | Path] = ()) -> dict[str, Any] | None:
    """The finished result of exactly ``cfg`` in ``run_dir``, else in the first run folder directly under one of
    ``reuse`` (e.g. another benchmark's output, or a folder of committed artifacts) that holds one; None if none.
    Its ``run_dir`` is the folder it was found in."""
    candidates = [Path(run_dir)]
    for parent in map(Path, reuse):
        if parent.is_dir():
            candidates += sorted(d for d in parent.iterdir() if d.is_dir())
    for folder in candidates:
        if (found := finished_result(folder, cfg)) is not None:
            return {**found, "run_dir": str(folder)}
    return None


def write_grid(out_dir: Path, configs: list[ExperimentConfig], names: list[str] | None = None) -> None:
    """``out_dir/grid.json``: the resolved config of every cell, in order, and its folder name (atomic write)."""
    names = names or [cell_name(i, c) for i, c in enumerate(configs)]
    atomic_write_json(out_dir / GRID_FILE, {"format": "seqvae-grid/1", "names": names,
                                            "cells": [c.model_dump(mode="json") for c in configs]}, indent=1)


def read_grid(out_dir: str | Path) -> tuple[list[ExperimentConfig], list[str]]:
    """The configs that ``write_grid`` stored in ``out_dir``, validated again, and their folder names.

    Raises:
        seqvae.config.ConfigError: no grid there, a malformed file, or a cell that no longer validates.
    """
    from seqvae.config import ConfigError, validate_experiment

    path = Path(out_dir) / GRID_FILE
    try:
        data = json.loads(path.read_text())
        cells = data["cells"]
        names = data.get("names")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; is {out_dir} the output folder of a seqvae bench?") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: not a readable grid file ({type(exc).__name__}: {exc})") from None
    configs = [validate_experiment(c, source=f"{path} (grid cell {i})") for i, c in enumerate(cells)]
    if names is None:  # written before the names were stored: the default names
        names = [cell_name(i, c) for i, c in enumerate(configs)]
    elif not (isinstance(names, list) and len(names) == len(configs) and all(isinstance(n, str) for n in names)):
        raise ConfigError(f"{path}: 'names' must list one folder name per cell")
    return configs, names


def load_corpora(
    configs: list[ExperimentConfig], cache_dir: str | Path | None = None, corpora: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Each distinct data set of ``configs`` loaded once, keyed by ``dataset_key`` (``corpora`` is filled in).

    Raises:
        seqvae.data.corpora.CorpusError: bad corpus input, naming the file and line.
    """
    from seqvae.data.loading import load_corpus

    corpora = {} if corpora is None else corpora
    for cfg in configs:
        key = dataset_key(cfg)
        if key not in corpora:
            corpora[key] = load_corpus(cfg.data.dataset, cache_dir)
    return corpora


def compare_metrics(a: dict[str, Any], b: dict[str, Any], rel: float = 1e-9) -> list[dict[str, Any]]:
    """The metrics whose values differ between two ``result.json`` metric dicts (numbers within ``rel``)."""
    diffs = []
    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool):
            same = abs(x - y) <= rel * max(1.0, abs(x), abs(y))
        elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
            same = not compare_metrics(dict(enumerate(x)), dict(enumerate(y)), rel)
        else:
            same = x == y
        if not same:
            diffs.append({"metric": key, "original": x, "rerun": y})
    return diffs


def rerun(run_dir: RunDir | str | Path, target: str | Path, *, cache_dir: str | Path | None = None,
          progress: bool = False, corpus: Any = None) -> dict[str, Any]:
    """Train a finished run's own config again into ``target`` and compare every metric with its ``result.json``.

    Returns ``{"original", "rerun", "reproduced", "differences", "compared"}`` (``compared``: the
    numeric metrics checked). Raises ``ValueError`` when ``run_dir`` holds no finished run.
    """
    from seqvae.training import run_experiment

    rd = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    original = rd.read_result()
    if original is None:
        raise ValueError(f"{rd.path}: not a finished seqvae run (no readable {rd.RESULT})")
    again = run_experiment(rd.read_config(), target, cache_dir=cache_dir, progress=progress, corpus=corpus)
    diffs = compare_metrics(original.get("metrics") or {}, again["metrics"])
    compared = sum(1 for v in again["metrics"].values() if isinstance(v, (int, float)) and not isinstance(v, bool))
    return {"original": str(rd.path), "rerun": str(target), "reproduced": not diffs, "differences": diffs,
            "compared": compared}


def failed_row(cfg: ExperimentConfig, run_dir: Path, exc: BaseException) -> dict[str, Any]:
    """The ``status: failed`` row of a cell, with its cause."""
    return {**cfg.component_names(), "seed": cfg.train.seed, "metrics": None, "collapsed": None, "components": {},
            "run_dir": str(run_dir), "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def run_cell(
    cfg: ExperimentConfig, run_dir: Path, *, cache_dir: str | Path | None = None, progress: bool = False,
    corpus: Any = None, resume: bool = False,
) -> dict[str, Any]:
    """One grid cell trained and evaluated (continued from its checkpoint with ``resume``; finished cells
    are reused by ``run_grid`` before it gets here): its result row, or a ``status: failed`` row with
    the cause (never raises, but ``seqvae.training.RunInterrupted``, which stops the whole grid)."""
    from seqvae.training import RunInterrupted, run_experiment

    try:
        return run_experiment(cfg, run_dir, cache_dir=cache_dir, progress=progress, corpus=corpus, resume=resume)
    except RunInterrupted:  # the whole grid was asked to stop; its state is saved
        raise
    except Exception as exc:  # one failed cell must not cost the rest of the grid
        log.error("cell %s failed: %s", run_dir.name, exc)
        log.debug("%s", traceback.format_exc())
        return failed_row(cfg, run_dir, exc)


def _worker_init(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)


def _worker_cell(cfg_json: dict, run_dir: str, cache_dir: Any, corpus: Any, resume: bool) -> dict[str, Any]:
    from seqvae.config import validate_experiment

    return run_cell(validate_experiment(cfg_json), Path(run_dir), cache_dir=cache_dir, corpus=corpus, resume=resume)


def run_grid(
    configs: list[ExperimentConfig],
    out_dir: str | Path,
    *,
    names: list[str] | None = None,
    reuse: Sequence[str | Path] = (),
    cache_dir: str | Path | None = None,
    progress: bool = False,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    corpora: dict[str, Any] | None = None,
    resume: bool = False,
    parallel: int = 1,
) -> list[dict[str, Any]]:
    """Train and evaluate every config; a failing cell is recorded (status ``failed``) and the grid goes on.

    Each cell runs in ``out_dir/<name>``, ``names`` giving the folder names (default:
    [`cell_name`][seqvae.bench.runner.cell_name]). The grid is written to ``grid.json`` first, so
    ``seqvae bench --resume OUT_DIR`` can find it; ``results.jsonl`` gets one row per cell as it
    finishes. Each distinct data set is loaded once and shared by the cells that use it; ``corpora``
    may hold some already loaded, keyed by ``dataset_key``.

    With ``resume``, the finished cells (in their own folder, or in a run folder directly under one
    of ``reuse``: see [`find_finished`][seqvae.bench.runner.find_finished]) are reported first, as they
    are, and the unfinished ones continue from their last checkpoint (see
    ``seqvae.training.run_experiment``). ``on_result`` is called with each row as it is known.
    ``seqvae.training.RunInterrupted`` (SIGTERM, Ctrl-C) stops the grid with every state saved.

    ``parallel`` > 1 runs that many cells at once in worker processes, each with
    ``cpu_count // parallel`` threads, so the cores are shared, not oversubscribed. The rows come
    back in grid order whatever order the cells finish in.
    """
    from seqvae.distributed import is_rank_zero

    corpora = dict(corpora or {})
    out_dir = Path(out_dir)
    names = names or [cell_name(i, cfg) for i, cfg in enumerate(configs)]
    if len(names) != len(configs) or len(set(names)) != len(names):
        raise ValueError(f"run_grid needs one distinct folder name per config (got {len(names)} for {len(configs)})")
    rank0 = is_rank_zero()  # the other processes of a multi-device launch only train
    if rank0:
        out_dir.mkdir(parents=True, exist_ok=True)
        write_grid(out_dir, configs, names)
        (out_dir / RESULTS_FILE).unlink(missing_ok=True)

    def record(row: dict[str, Any]) -> None:
        if rank0:
            with open(out_dir / RESULTS_FILE, "a", encoding="utf-8") as fh:
                fh.write(json.dumps(row) + "\n")
        if on_result:
            on_result(row)

    dirs = [out_dir / name for name in names]
    done: dict[int, dict[str, Any]] = {}
    if resume:  # every finished cell first, so whoever watches the rows sees them all at once
        for i, (cfg, run_dir) in enumerate(zip(configs, dirs)):
            if (found := find_finished(cfg, run_dir, reuse)) is not None:
                log.info("cell %s finished before; reusing %s", run_dir.name, found["run_dir"])
                done[i] = found
                record(found)
    todo = [i for i in range(len(configs)) if i not in done]
    if parallel > 1 and len(todo) > 1:
        rows = _run_parallel([configs[i] for i in todo], [dirs[i] for i in todo], cache_dir, corpora, resume,
                             parallel, record)
        done.update(zip(todo, rows))
        return [done[i] for i in range(len(configs))]
    for i in todo:
        cfg, run_dir = configs[i], dirs[i]
        log.info("cell %d/%d: %s", i + 1, len(configs), run_dir.name)
        try:
            corpus = load_corpora([cfg], cache_dir, corpora)[dataset_key(cfg)]
        except Exception as exc:  # recorded like any other failure of the cell
            row = failed_row(cfg, run_dir, exc)
        else:
            row = run_cell(cfg, run_dir, cache_dir=cache_dir, progress=progress, corpus=corpus, resume=resume)
        record(row)
        done[i] = row
    return [done[i] for i in range(len(configs))]


def _run_parallel(configs: list[ExperimentConfig], dirs: list[Path], cache_dir: Any, corpora: dict[str, Any],
                  resume: bool, parallel: int, record: Callable[[dict[str, Any]], None]) -> list[dict[str, Any]]:
    """Cells in ``parallel`` spawned worker processes sharing the cores; rows in grid order."""
    import multiprocessing as mp
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed

    threads = max(1, (os.cpu_count() or 1) // parallel)
    load_corpora(configs, cache_dir, corpora)
    log.info("running %d cells, %d at a time with %d thread(s) each", len(configs), parallel, threads)
    rows: list[dict[str, Any] | None] = [None] * len(configs)
    with ProcessPoolExecutor(parallel, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(threads,)) as pool:
        futures = {pool.submit(_worker_cell, cfg.model_dump(mode="json"), str(d), cache_dir,
                               corpora[dataset_key(cfg)], resume): i
                   for i, (cfg, d) in enumerate(zip(configs, dirs))}
        for fut in as_completed(futures):
            i = futures[fut]
            try:
                row = fut.result()
            except Exception as exc:  # the worker process itself died (e.g. killed for memory)
                row = failed_row(configs[i], dirs[i], exc)
            log.info("cell %d/%d finished: %s (%s)", i + 1, len(configs), dirs[i].name, row["status"])
            record(row)
            rows[i] = row
    return [r for r in rows if r is not None]
