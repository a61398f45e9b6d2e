"""One run in one folder: train ``cfg`` with Lightning, evaluate it, write the run folder (``run_experiment``)."""

from __future__ import annotations

import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.utilities.exceptions import SIGTERMException

from seqvae.composer import build_model, component_provenance
from seqvae.config import ConfigError, ExperimentConfig
from seqvae.data.corpus import Corpus
from seqvae.data.datamodule import TextDataModule, eval_batches
from seqvae.data.loading import load_corpus
from seqvae.distributed import global_rank, is_rank_zero
from seqvae.metrics import evaluate
from seqvae.model import SequenceVAE
from seqvae.registry import installed_plugins
from seqvae.run_dir import RunDir
from seqvae.training.callbacks import CtrlC, Heartbeat, ResumeCheckpoint, StepProgressBar, StopRequested
from seqvae.training.checkpoint import ResumeError, checkpoint_step, load_checkpoint, save_checkpoint, versions
from seqvae.training.recipes import ValidationRecipe
from seqvae.training.system import VAESystem, quiet_lightning

__all__ = ["HEARTBEAT_SECONDS", "RunInterrupted", "evaluate_run", "run_experiment", "write_plots"]

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 60.0  # without a progress bar, a training log line this often (see Heartbeat)


class RunInterrupted(Exception):
    """The run was stopped by SIGTERM (a cluster's pre-emption) or Ctrl-C after saving its state; resume it.

    ``exit_code`` is what a shell reports for that signal: 143 for SIGTERM, 130 for Ctrl-C.
    """

    def __init__(self, message: str, exit_code: int = 143):
        super().__init__(message)
        self.exit_code = exit_code


def evaluate_run(
    model: SequenceVAE,
    cfg: ExperimentConfig,
    corpus: Corpus,
    *,
    split: str | None = None,
    iw_samples: int | None = None,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    precision: str | None = None,
) -> dict[str, Any]:
    """The metric set of ``model`` on a split of ``corpus`` with the settings of ``cfg.eval``.

    ``split``, ``iw_samples`` and ``precision`` override the config's. ``precision="bf16-mixed"`` evaluates under
    bf16 autocast on ``device`` (matrix products in bf16, the posterior, the KL, every log-sum-exp and
    every sum in float32); it is recorded as ``eval_precision``. Timing is added as ``eval_seconds``. With
    ``checkpoint`` (the file the model was loaded from or saved to), the running sums are kept in
    ``eval-partial-<split>-k<K>.pt`` next to it, so an interrupted evaluation continues where it
    stopped (for this same checkpoint file) instead of starting over.
    """
    e = cfg.eval
    split = split or e.split
    k = e.iw_samples if iw_samples is None else iw_samples
    precision = precision or e.precision
    start = time.perf_counter()
    batches = eval_batches(corpus.split(split), corpus.vocab, cfg.data.eval_batch_size)
    partial, key = None, ""
    if checkpoint is not None and Path(checkpoint).exists():
        st = Path(checkpoint).stat()
        partial = RunDir.eval_partial(Path(checkpoint), split, k, precision)
        key = f"{Path(checkpoint).name}:{st.st_mtime_ns}:{st.st_size}|{split}|{precision}"
    if precision not in ("32-true", "bf16-mixed"):
        raise ValueError(f"precision must be 32-true or bf16-mixed, got {precision!r}")
    stats: dict[str, Any] = {}
    with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16-mixed"):
        metrics = evaluate(
            model, batches, seed=cfg.train.seed, au_threshold=e.au_threshold, collapse_kl=e.collapse_kl,
            iw_samples=k, device=device, partial=partial, partial_key=key, stats=stats,
        )
    out = {"split": split, "metrics": metrics, "eval_seconds": round(time.perf_counter() - start, 3),
           "eval_precision": precision}
    if stats.get("resumed_batches"):  # continued an interrupted evaluation: report the time of all its parts
        out["eval_seconds"] = round(stats["seconds"], 3)
        out["eval_resumed_batches"] = stats["resumed_batches"]
    return out


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    corpus: Corpus | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` with Lightning, evaluate it, and write the run folder.

    The folder receives ``config.json`` (resolved config), ``logs/metrics.csv`` (training curves),
    ``resume.ckpt`` (every ``train.checkpoint_every`` steps while training, written atomically),
    ``checkpoint.pt`` and ``trained.json`` (as soon as training ends), and ``result.json`` (metrics,
    provenance, timings). ``corpus`` skips loading the data set (a grid passes the one it loaded for
    all its cells).

    With ``resume``, the folder's own progress on this same config is used: a finished training
    (``trained.json`` + ``checkpoint.pt``) is only evaluated, and an interrupted one continues from
    ``resume.ckpt`` with its step, optimizer, strategy, RNG states and data order restored, so it
    ends with the metrics an uninterrupted run would have. Only the training part of the config must
    match: under other ``eval`` settings (say a different K) the training is still reused, and an
    earlier result is kept as ``eval-<split>-k<K>.json``. A finished training whose checkpoint
    ``seqvae eval`` has already evaluated under the new settings (its ``eval-<split>-k<K>[-bf16].json``,
    newer than the checkpoint) takes that result instead of evaluating again (``eval_reused`` names
    the file). A folder holding another training config starts over.

    Returns:
        The ``result.json`` content.
    """
    rd = RunDir(run_dir)
    run_dir = rd.path
    rank0 = is_rank_zero()  # in a multi-process launch only global rank 0 writes, evaluates and reports
    quiet_lightning(verbose=log.isEnabledFor(logging.DEBUG))
    t = cfg.train
    if corpus is None:
        corpus = load_corpus(cfg.data.dataset, cache_dir)
    _check_splits(cfg, corpus)  # before the folder is touched
    if rank0:
        rd.create()
    trained = rd.finished_training(cfg) if resume else None
    evaluated = None
    if trained is not None:
        log.info("%s: training already finished; evaluating the saved checkpoint", run_dir)
        if rank0:
            _adopt_eval_settings(rd, cfg)
        # `seqvae eval` may have evaluated this checkpoint under these settings already
        evaluated = rd.recorded_evaluation(cfg.eval.split, cfg.eval.iw_samples, cfg.eval.precision)
        model, _, _ = load_checkpoint(rd.checkpoint)
        device = torch.device("cuda" if t.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
        model.to(device)
    else:
        ckpt: Path | None = rd.resume_checkpoint
        if not (resume and rd.resume_checkpoint.exists() and rd.same_config(cfg, training_only=True)):
            if rank0:
                rd.start_fresh(cfg)
            ckpt = None
        else:
            log.info("%s: resuming the interrupted training from %s", run_dir, rd.RESUME)
            if rank0:
                _adopt_eval_settings(rd, cfg)
        model, trained, device = _train(cfg, rd, corpus, progress, ckpt)
        if not rank0:
            return {"status": "ok", "rank": global_rank(), "run_dir": str(run_dir)}
    if evaluated is not None:
        log.info("%s: the evaluation under these settings is recorded in %s; reusing it", run_dir,
                 evaluated["eval_reused"])
    else:
        evaluated = evaluate_run(model, cfg, corpus, device=device, checkpoint=rd.checkpoint)
    metrics = evaluated["metrics"]
    result = {
        **cfg.component_names(),
        "seed": t.seed,
        "split": cfg.eval.split,
        "metrics": metrics,
        "collapsed": metrics["collapsed"],
        "components": component_provenance(cfg),
        "run_dir": str(run_dir),
        **trained,
        "eval_seconds": evaluated["eval_seconds"],
        "eval_precision": evaluated["eval_precision"],
        **({"eval_resumed_batches": evaluated["eval_resumed_batches"]} if "eval_resumed_batches" in evaluated else {}),
        **({"eval_reused": evaluated["eval_reused"]} if "eval_reused" in evaluated else {}),
        "data": {k: corpus.info[k] for k in ("sentences", "tokens", "vocab_size", "read", "unk_tokens")
                 if k in corpus.info},
        "versions": versions(),
        "plugins": installed_plugins(),
        "command": sys.argv,
        "status": "ok",
    }
    result["plots"] = write_plots(run_dir, model, cfg, corpus)
    rd.write_result(result)
    return result


def _loggers(cfg: ExperimentConfig, rd: RunDir) -> list[Any]:
    """The CSV log (always: the curves, the plots and resume read it) and the loggers of ``train.loggers``."""
    # rows reach metrics.csv at the end of the step that logs them, so a kill loses none that a resume keeps
    loggers: list[Any] = [CSVLogger(str(rd.path), name=rd.LOGS, version="", flush_logs_every_n_steps=1)]
    for name in cfg.train.loggers:
        if name == "tensorboard":
            from lightning.pytorch.loggers import TensorBoardLogger

            loggers.append(TensorBoardLogger(str(rd.path), name=rd.LOGS, version="tensorboard", default_hp_metric=False))
        elif name == "wandb":
            import os

            from lightning.pytorch.loggers import WandbLogger

            os.environ.setdefault("WANDB_MODE", "offline")  # no network unless the user asks for it
            loggers.append(WandbLogger(save_dir=str(rd.path), name=rd.path.name, project="seqvae"))
        elif name == "mlflow":
            from lightning.pytorch.loggers import MLFlowLogger

            loggers.append(MLFlowLogger(experiment_name="seqvae", run_name=rd.path.name,
                                        tracking_uri=(rd.path / "mlruns").resolve().as_uri()))
    return loggers


def _check_splits(cfg: ExperimentConfig, corpus: Corpus) -> None:
    """The splits ``cfg`` needs are in ``corpus`` (checked before the run folder is touched)."""
    have = ", ".join(corpus.splits)
    if cfg.train.val_every and "valid" not in corpus.splits:
        raise ConfigError(f"train.val_every validates on the valid split, which {cfg.data.dataset.kind} data "
                          f"lacks here (it has: {have}); drop val_every and the recipes that need it, or give "
                          "the dataset a valid split")
    if cfg.eval.split not in corpus.splits:
        raise ConfigError(f"eval.split: the {cfg.data.dataset.kind} data has no {cfg.eval.split} split (it has: {have})")


def _adopt_eval_settings(rd: RunDir, cfg: ExperimentConfig) -> None:
    kept = rd.adopt_eval_settings(cfg)
    if kept is not None:
        log.info("%s: the result under the earlier evaluation settings is kept in %s", rd.path, kept.name)


def _train(
    cfg: ExperimentConfig, rd: RunDir, corpus: Corpus, progress: bool, resume_from: Path | None = None
) -> tuple[SequenceVAE, dict, Any]:
    """Fit ``cfg`` with Lightning (from ``resume_from`` when given); save the checkpoint and ``trained.json``.

    Returns (model, trained, device). Every run ends with a validation of its last weights when the
    corpus has a valid split; ``train.val_every`` without one is a ``ConfigError``.
    """
    t = cfg.train
    validates = "valid" in corpus.splits  # the end-of-run validation needs the split (see _check_splits)
    L.seed_everything(t.seed, workers=True, verbose=False)
    model = build_model(cfg, corpus.vocab)
    system = VAESystem(model, cfg)
    dm = TextDataModule(corpus, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.bucket_factor, t.seed)
    run_dir = rd.path
    if resume_from is not None:
        step = checkpoint_step(resume_from)
        if is_rank_zero():
            rd.keep_metrics_before(step)
    recipe = ValidationRecipe(t)  # before the checkpoint: a state written after a validation includes it
    ctrl_c = CtrlC()
    callbacks = [recipe, ResumeCheckpoint(rd.resume_checkpoint, t.checkpoint_every, t.val_every, ctrl_c)]
    callbacks.append(StepProgressBar() if progress else Heartbeat(HEARTBEAT_SECONDS))
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.distributed if t.world_size > 1 else "auto",
        precision=t.precision,
        max_steps=t.max_steps,
        max_epochs=-1,
        logger=_loggers(cfg, rd),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=t.log_interval,
        # every val_every steps (counted across epochs), and once at the end below; never without val_every
        val_check_interval=t.val_every or t.max_steps + 1,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if validates else 0,
        deterministic=t.deterministic,
    )
    with warnings.catch_warnings():
        for msg in (".*does not have many workers.*", ".*IterableDataset.*", ".*LeafSpec.*",
                    ".*smaller than the logging interval.*", ".*exists and is not empty.*"):
            warnings.filterwarnings("ignore", message=msg)
        try:
            with ctrl_c:
                trainer.fit(system, datamodule=dm, ckpt_path=resume_from, weights_only=True)
        except StopRequested as exc:
            raise RunInterrupted(f"{run_dir}: {exc}; its state is saved in {rd.RESUME}", exit_code=130) from None
        except RuntimeError as exc:
            if resume_from is None or "state_dict" not in str(exc):
                raise
            lines = [ln.strip() for ln in str(exc).strip().splitlines()]
            first = next((ln for ln in lines if "size mismatch" in ln), lines[0]).rstrip(".")
            raise ResumeError(f"{resume_from}: its weights do not fit this run's model ({first})") from None
        except SIGTERMException:  # Lightning's SystemExit with code 0: say what happened instead
            raise RunInterrupted(
                f"{run_dir}: stopped by SIGTERM at step {trainer.global_step}; its state is saved in {rd.RESUME}"
            ) from None
        if validates and (not recipe.history or recipe.history[-1]["step"] != trainer.global_step):
            recipe.final = True  # every run ends with a validation of its last weights, however short
            trainer.validate(system, datamodule=dm, verbose=False, weights_only=True)
    kept_best = recipe.restore_best(model)
    train_s = system.train_seconds()
    tokens = int(system.tokens_seen)
    if not trainer.is_global_zero:
        return model, {}, system.device
    rd.join_metrics()
    save_checkpoint(rd.checkpoint, model, cfg, corpus.vocab.to_list())
    trained = {
        "steps": int(trainer.global_step),
        "train_tokens": tokens,
        "world_size": trainer.world_size,
        "train_seconds": round(train_s, 3),
        "train_tokens_per_second": round(tokens / train_s, 1) if train_s > 0 else None,
        "strategy_state": system.strategy.state(),
        "validation": {**recipe.summary(), "checkpoint_weights": "best" if kept_best else "last"},
        "threads": torch.get_num_threads(),  # CPU threads of this process: train_seconds depends on them
        "sessions": system.sessions(),  # with a resume, the threads, steps and seconds of each part
    }
    if resume_from is not None:
        trained["resumed"] = True
    rd.write_trained(cfg, trained)
    rd.finish_training()
    return model, trained, system.device


def write_plots(run_dir: Path, model: SequenceVAE, cfg: ExperimentConfig, corpus: Corpus) -> list[str]:
    """``training.png`` and, for a 2-d latent, ``latent.png`` in ``run_dir``; names of those written.

    A plotting failure is logged, never raised: it must not cost a finished run.
    """
    from seqvae.plots import plot_latent, plot_training

    written = []
    names = cfg.component_names()
    title = f"{names['encoder']}/{names['decoder']}/{names['prior']}, {names['schedule']}"
    try:
        rd = RunDir(run_dir)
        if plot_training(rd.metrics_csv, rd / rd.TRAINING_PLOT, title) is not None:
            written.append(rd.TRAINING_PLOT)
        if model.ctx.latent_dim == 2:
            means, labels = [], []
            model.eval()
            with torch.no_grad():
                for batch in eval_batches(corpus.split(cfg.eval.split), corpus.vocab, cfg.data.eval_batch_size):
                    means.append(model.encode(batch.to(next(model.parameters()).device)).mean.float().cpu())
                    if batch.labels is not None:
                        labels.append(batch.labels)
            lab = torch.cat(labels).numpy() if labels else None
            plot_latent(torch.cat(means).numpy(), lab, rd / rd.LATENT_PLOT,
                        f"posterior means on {cfg.eval.split} ({title})")
            written.append(rd.LATENT_PLOT)
    except Exception as exc:  # plots are a convenience; the run's numbers are already safe
        log.warning("could not write plots into %s: %s", run_dir, exc)
    return written
