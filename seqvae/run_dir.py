"""The run folder: every file name of a run, atomic writes, and what a folder says about its run.

One run of one config lives in one folder::

    config.json          the resolved config (written first)
    logs/metrics.csv     training curves (Lightning's CSV logger; spliced across resumes)
    resume.ckpt          the full training state while training (every train.checkpoint_every steps)
    checkpoint.pt        the trained weights (seqvae's own format; see seqvae.training.checkpoint)
    trained.json         what training recorded, written when it ends (with its config)
    result.json          metrics + provenance, written last: its presence means "finished"
    eval-<split>-k<K>[-bf16].json          results of ``seqvae eval`` under other settings
    eval-partial-<split>-k<K>[-bf16].pt    the running sums of an interrupted evaluation
    training.png, latent.png               plots

A grid (``seqvae bench``) is a folder of run folders plus ``grid.json`` (every cell's config)
and ``results.jsonl`` (one row per finished cell). ``RunDir`` is the only code that knows these
names; the training, the grid runner, the CLI and the benchmark scripts ask it.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

from seqvae.config import ConfigError, ExperimentConfig, validate_experiment

__all__ = ["GRID_FILE", "RESULTS_FILE", "RunDir", "atomic_write_json", "atomic_write_text", "load_error",
           "temporary_path"]

GRID_FILE = "grid.json"
RESULTS_FILE = "results.jsonl"


def temporary_path(path: Path) -> Path:
    """Where to write ``path``'s new content before renaming it into place (same folder, same file system)."""
    return path.with_name(path.name + ".tmp")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that a kill at any moment leaves the old file or the new one, never half."""
    tmp = temporary_path(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def atomic_write_json(path: Path, data: Any, indent: int | None = 2) -> None:
    """``data`` as JSON at ``path``, atomically (see ``atomic_write_text``)."""
    atomic_write_text(path, json.dumps(data, indent=indent))


def load_error(exc: BaseException) -> str:
    """``Type: first line`` of a failed ``torch.load``, without PyTorch's advice to set ``weights_only=False``.

    That advice would run code from the file; seqvae never does, so the hint is dropped.
    """
    first = (str(exc).strip().splitlines() or [""])[0]
    if "weights_only" in first or "Weights only load failed" in first:
        first = "it holds Python objects, and seqvae loads only tensors and plain data (weights_only)"
    return f"{type(exc).__name__}: {first}"


def _read_json(path: Path) -> Any:
    """The JSON in ``path``; None when it is missing or unreadable."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _comparable(cfg: ExperimentConfig, training_only: bool) -> dict[str, Any]:
    """``cfg`` as plain data; without the ``eval`` section when only the training matters.

    The evaluation settings (split, K, AU threshold, collapse rule) are read after training only, so
    a finished or interrupted training serves any of them.
    """
    data = cfg.model_dump(mode="json")
    if training_only:
        data.pop("eval")
    return data


class RunDir:
    """The folder of one run: its file names, its state, and the changes a run makes to it."""

    CONFIG = "config.json"
    TRAINED = "trained.json"
    RESULT = "result.json"
    CHECKPOINT = "checkpoint.pt"
    RESUME = "resume.ckpt"
    LOGS = "logs"
    METRICS = "metrics.csv"
    PREVIOUS_METRICS = "metrics.before-resume.csv"
    TRAINING_PLOT = "training.png"
    LATENT_PLOT = "latent.png"
    #: what a run writes about itself (copied by benchmark scripts that keep a row's small files)
    SMALL_ARTIFACTS = (CONFIG, TRAINED, RESULT, f"{LOGS}/{METRICS}")

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    # ------------------------------------------------------------------------------ file names
    @property
    def config_file(self) -> Path:
        return self.path / self.CONFIG

    @property
    def trained_file(self) -> Path:
        return self.path / self.TRAINED

    @property
    def result_file(self) -> Path:
        return self.path / self.RESULT

    @property
    def checkpoint(self) -> Path:
        return self.path / self.CHECKPOINT

    @property
    def resume_checkpoint(self) -> Path:
        return self.path / self.RESUME

    @property
    def logs(self) -> Path:
        return self.path / self.LOGS

    @property
    def metrics_csv(self) -> Path:
        return self.logs / self.METRICS

    @staticmethod
    def eval_name(split: str, iw_samples: int, precision: str = "32-true") -> str:
        """``eval-<split>-k<K>.json`` (``-bf16`` before ``.json`` for a bf16 evaluation)."""
        return f"eval-{split}-k{iw_samples}{'-bf16' if precision == 'bf16-mixed' else ''}.json"

    def eval_record(self, split: str, iw_samples: int, precision: str = "32-true") -> Path:
        """Where ``seqvae eval`` keeps a result under other settings than the run's own."""
        return self.path / self.eval_name(split, iw_samples, precision)

    def recorded_evaluation(self, split: str, iw_samples: int, precision: str = "32-true") -> dict[str, Any] | None:
        """The evaluation of this folder's ``checkpoint.pt`` under these settings that ``seqvae eval`` (or an
        earlier result kept by ``adopt_eval_settings``) recorded, as ``evaluate_run`` returns it; None when
        there is none, or when it is older than the checkpoint (a record of an earlier training)."""
        path = self.eval_record(split, iw_samples, precision)
        try:
            rec = json.loads(path.read_text())
            fresh = path.stat().st_mtime_ns >= self.checkpoint.stat().st_mtime_ns
        except (OSError, ValueError):
            return None
        metrics = rec.get("metrics") if isinstance(rec, dict) else None
        if (not fresh or rec.get("status") != "ok" or not isinstance(metrics, dict) or rec.get("split") != split
                or metrics.get("iw_samples", 0) != iw_samples or rec.get("eval_precision", "32-true") != precision):
            return None
        return {"split": split, "metrics": metrics, "eval_seconds": rec.get("eval_seconds"), "eval_precision": precision,
                "eval_reused": path.name}

    def eval_records(self) -> list[Path]:
        """Every ``eval-<split>-k<K>*.json`` in the folder, sorted by name."""
        return sorted(self.path.glob("eval-*-k*.json"))

    @staticmethod
    def eval_partial(checkpoint: Path, split: str, iw_samples: int, precision: str = "32-true") -> Path:
        """The running sums of an interrupted evaluation of ``checkpoint`` (kept beside it)."""
        tag = "-bf16" if precision == "bf16-mixed" else ""
        return checkpoint.with_name(f"eval-partial-{split}-k{iw_samples}{tag}.pt")

    # ------------------------------------------------------------------------------- reading
    def exists(self) -> bool:
        """Whether the folder holds a run (its ``config.json``)."""
        return self.config_file.exists()

    def is_finished(self) -> bool:
        """Whether the run wrote its ``result.json`` (training and evaluation done)."""
        return self.result_file.exists()

    def read_config(self) -> ExperimentConfig:
        """The stored config, validated with today's defaults.

        Raises:
            ConfigError: no ``config.json``, or one that does not validate (the message names the file).
        """
        try:
            data = json.loads(self.config_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"{self.path}: no {self.CONFIG}; is it a seqvae run folder?") from None
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self.config_file}: not readable JSON ({exc})") from None
        return validate_experiment(data, source=str(self.config_file))

    def read_result(self) -> dict[str, Any] | None:
        """``result.json`` when present and readable."""
        data = _read_json(self.result_file)
        return data if isinstance(data, dict) else None

    def same_config(self, cfg: ExperimentConfig, *, training_only: bool = False) -> bool:
        """Whether ``config.json`` is ``cfg`` (with ``training_only``: all but its ``eval`` section).

        The stored config is validated again with today's defaults before the comparison, so a
        config field added later, whose default keeps the old behaviour, does not disown older runs.
        """
        try:
            stored = self.read_config()
        except ConfigError:
            return False
        return _comparable(stored, training_only) == _comparable(cfg, training_only)

    def finished_result(self, cfg: ExperimentConfig) -> dict[str, Any] | None:
        """The ``result.json`` of a finished run of ``cfg``; None if absent, failed or another config."""
        result = self.read_result()
        if result is None or result.get("status") != "ok" or not self.same_config(cfg):
            return None
        return result

    def finished_training(self, cfg: ExperimentConfig) -> dict[str, Any] | None:
        """What ``trained.json`` records of a finished training of ``cfg`` (less its config).

        The evaluation settings may differ. None when there is no finished training of this
        config, or no ``checkpoint.pt``.
        """
        if not self.checkpoint.exists():
            return None
        data = _read_json(self.trained_file)
        if not isinstance(data, dict) or "config" not in data:
            return None
        try:
            stored = validate_experiment(data.pop("config"))
        except ConfigError:
            return None
        return data if _comparable(stored, True) == _comparable(cfg, True) else None

    def training_progress(self) -> dict[str, Any] | None:
        """How far an interrupted training got, from ``resume.ckpt``: step, training seconds, strategy state
        and the parts it trained in (``sessions``, see ``trained.json``).

        None when there is no resume checkpoint. Raises ``ValueError`` naming the file when it
        cannot be read. Nothing in the file is executed (``weights_only``).
        """
        if not self.resume_checkpoint.exists():
            return None
        import torch

        try:
            saved = torch.load(self.resume_checkpoint, map_location="cpu", weights_only=True)
            step = int(saved["global_step"])
        except Exception as exc:
            raise ValueError(f"{self.resume_checkpoint}: not a readable resume checkpoint ({load_error(exc)})") from None
        ours = saved.get("seqvae", {}) if isinstance(saved, dict) else {}
        return {"step": step, "train_seconds": float(ours.get("train_seconds", 0.0)),
                "strategy_state": dict(ours.get("strategy", {})), "sessions": list(ours.get("sessions", []))}

    # ------------------------------------------------------------------------------- writing
    def create(self) -> None:
        """Make the folder (and its parents) if it is not there."""
        self.path.mkdir(parents=True, exist_ok=True)

    def write_config(self, cfg: ExperimentConfig) -> None:
        """``config.json``: the resolved config (atomic)."""
        atomic_write_json(self.config_file, cfg.model_dump(mode="json"))

    def write_trained(self, cfg: ExperimentConfig, trained: dict[str, Any]) -> None:
        """``trained.json``: what training recorded, with the config it trained (atomic)."""
        atomic_write_json(self.trained_file, {"config": cfg.model_dump(mode="json"), **trained})

    def write_result(self, result: dict[str, Any]) -> None:
        """``result.json``, written last: the run is finished once it is there (atomic)."""
        atomic_write_json(self.result_file, result)

    def start_fresh(self, cfg: ExperimentConfig) -> None:
        """A new training of ``cfg``: nothing of an earlier run here may be mistaken for this one's."""
        for path in (self.resume_checkpoint, self.trained_file, self.result_file, self.metrics_csv,
                     self.logs / self.PREVIOUS_METRICS):
            path.unlink(missing_ok=True)
        self.write_config(cfg)

    def adopt_eval_settings(self, cfg: ExperimentConfig) -> Path | None:
        """Continue a run of ``cfg``'s training under ``cfg``'s evaluation settings, losing nothing.

        ``config.json`` becomes ``cfg``. A finished result under other settings is kept as
        ``eval-<split>-k<K>[-bf16].json`` (the file ``seqvae eval`` writes) unless one is there already;
        returns that file when it was written.
        """
        if self.same_config(cfg):
            return None
        old, kept = self.read_result(), None
        if old is not None and old.get("status") == "ok":
            keep = self.eval_record(str(old.get("split")), int(old.get("metrics", {}).get("iw_samples", 0)),
                                    str(old.get("eval_precision", "32-true")))
            if not keep.exists():
                atomic_write_json(keep, {"checkpoint": str(self.checkpoint), **old})
                kept = keep
        self.result_file.unlink(missing_ok=True)
        self.write_config(cfg)
        return kept

    def finish_training(self) -> None:
        """Training ended and its checkpoint and record are written: the resume state is no longer needed."""
        self.resume_checkpoint.unlink(missing_ok=True)

    # ------------------------------------------------------------------ metrics.csv across resumes
    def keep_metrics_before(self, step: int) -> None:
        """Before a resume at ``step``: keep the logged rows of the steps before it apart.

        Lightning's CSV logger starts ``metrics.csv`` afresh; rows logged after the checkpoint (the
        resumed run logs them again) are dropped. Repeated resumes keep accumulating.
        """
        rows: list[dict[str, str]] = []
        for path in (self.logs / self.PREVIOUS_METRICS, self.metrics_csv):
            rows += [r for r in _read_rows(path) if r.get("step") and int(float(r["step"])) < step]
        _write_rows(self.logs / self.PREVIOUS_METRICS, rows)
        self.metrics_csv.unlink(missing_ok=True)

    def join_metrics(self) -> None:
        """After a resumed training: ``metrics.csv`` = the rows kept from before the resume + the new ones."""
        before = self.logs / self.PREVIOUS_METRICS
        if not before.exists():
            return
        _write_rows(self.metrics_csv, _read_rows(before) + _read_rows(self.metrics_csv))
        before.unlink()


def _read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
