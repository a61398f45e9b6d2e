"""Training through Lightning: the ``VAESystem`` and ``run_experiment`` (one run, one folder)."""

from __future__ import annotations

import json
import logging
import os
import platform
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
from seqvae.config import ComponentConfig, ConfigError, ExperimentConfig
from seqvae.data.corpus import Corpus
from seqvae.data.datamodule import TextDataModule, eval_batches
from seqvae.distributed import global_rank, is_rank_zero
from seqvae.interfaces import Batch, Strategy
from seqvae.metrics import evaluate
from seqvae.model import SequenceVAE
from seqvae.recipes import ValidationRecipe
from seqvae.registry import get_registry, installed_plugins

__all__ = [
    "RESUME_FILE",
    "NonFiniteLossError",
    "ResumeCheckpoint",
    "ResumeError",
    "RunInterrupted",
    "VAESystem",
    "build_strategy",
    "clip_gradients",
    "default_cache_dir",
    "evaluate_run",
    "load_checkpoint",
    "load_corpus",
    "run_experiment",
    "same_config",
    "save_checkpoint",
    "write_plots",
]

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 60.0  # without a progress bar, a training log line this often (see Heartbeat)
CHECKPOINT_FORMAT = "seqvae-checkpoint/1"
RESUME_FILE = "resume.ckpt"


class ResumeError(ValueError):
    """A run folder's ``resume.ckpt`` cannot be used (unreadable, or not a training checkpoint)."""


class RunInterrupted(Exception):
    """The run was stopped by SIGTERM (e.g. a cluster's pre-emption) after saving its state; resume it."""


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the last finite values."""


def _rng_state() -> dict[str, Any]:
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    # plain types and tensors only, so the checkpoint loads with ``weights_only=True``
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def quiet_lightning(verbose: bool = False) -> None:
    """Route Lightning's chatter (GPU/TPU banners, tips) through our logging at WARNING level."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.INFO if verbose else logging.WARNING)


def default_cache_dir() -> Path:
    """``$SEQVAE_CACHE`` or ``~/.cache/seqvae``: where generated data sets are cached."""
    return Path(os.environ.get("SEQVAE_CACHE", Path.home() / ".cache" / "seqvae"))


class TermMeans:
    """Running sums of a step's stacked training terms (one tensor, kept on the device) and their mean."""

    def __init__(self) -> None:
        self.sums: torch.Tensor | None = None
        self.steps = 0

    def add(self, values: torch.Tensor) -> None:
        """Add one step's terms (``n terms``); a different set of terms starts the window again."""
        same = self.sums is not None and self.sums.shape == values.shape
        self.sums, self.steps = (self.sums + values, self.steps + 1) if same else (values, 1)

    def take(self) -> torch.Tensor:
        """The mean over the steps added since the last ``take``, and an empty window after it."""
        mean = self.sums / self.steps
        self.sums, self.steps = None, 0
        return mean

    def state(self) -> tuple[torch.Tensor, int] | None:
        return None if self.sums is None else (self.sums.detach().cpu(), self.steps)

    def load_state(self, state: tuple[torch.Tensor, int] | None, device: torch.device) -> None:
        if state is not None:
            self.sums, self.steps = state[0].to(device), state[1]


class VAESystem(L.LightningModule):
    """Owns the optimizer and the step counter that schedules see (``global_step``).

    The training strategy (``cfg.strategy``) is called around every step: it may change beta, run
    inner updates before the step, or drop gradients before the optimizer step.
    """

    def __init__(self, model: SequenceVAE, cfg: ExperimentConfig, strategy: Strategy | None = None):
        super().__init__()
        self.model, self.cfg = model, cfg
        self.strategy = strategy or build_strategy(cfg, model)
        self.register_buffer("tokens_seen", torch.zeros((), dtype=torch.long), persistent=False)
        self.train_seconds_before = 0.0  # training time spent before a resume
        self._started = time.perf_counter()
        self._restored: dict[str, Any] | None = None
        self._last_finite: tuple[torch.Tensor, ...] | None = None  # see _check_finite
        self._window = TermMeans()  # the training terms since the last logged step
        self._last_terms: tuple[list[str], torch.Tensor] | None = None  # the last step's (names, values)
        self._train_rng: torch.Tensor | None = None

    def forward(self, batch: Batch):
        step, total = self.global_step, self.cfg.train.max_steps
        beta = self.strategy.beta(self.model.schedule, step, total)
        return self.model(batch, step=step, total_steps=total, beta=beta)

    def on_train_end(self) -> None:
        if self.trainer.world_size > 1:  # every process counted its own share of the batches
            self.tokens_seen.copy_(self.trainer.strategy.reduce(self.tokens_seen, reduce_op="sum").long())

    def on_train_start(self) -> None:
        self._started = time.perf_counter()
        self.strategy.on_train_start(self)
        if self._restored is not None:  # resumed: the strategy's state and every RNG as they were saved
            self.strategy.load_state_dict(self._restored["strategy"])
            self.tokens_seen.fill_(self._restored["tokens_seen"])
            self._window.load_state(self._restored.get("log_window"), self.tokens_seen.device)
            self.train_seconds_before = self._restored["train_seconds"]
            _set_rng_state(self._restored["rng"])
            self._restored = None

    def train_seconds(self) -> float:
        """Seconds spent training, summed over the resumes of this run."""
        return self.train_seconds_before + time.perf_counter() - self._started

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["seqvae"] = {
            "config": self.cfg.model_dump(mode="json"),
            "strategy": self.strategy.state_dict(),
            "tokens_seen": int(self.tokens_seen),
            "log_window": self._window.state(),
            "train_seconds": self.train_seconds(),
            "rng": _rng_state(),
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self._restored = checkpoint["seqvae"]

    def on_validation_epoch_start(self) -> None:
        # validation draws its own, fixed noise and leaves the training RNG stream as it was, so the
        # validation schedule (or a resume that skips one validation) cannot change the training run
        self._train_rng = torch.get_rng_state()
        torch.manual_seed(self.cfg.train.seed)

    def on_validation_epoch_end(self) -> None:
        if self._train_rng is not None:
            torch.set_rng_state(self._train_rng)
            self._train_rng = None

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.strategy.before_optimizer_step(self, self.global_step)
        # clipped here, not by Lightning: its mixed-precision plugin refuses to clip for a fused
        # optimizer (it assumes a gradient scaler, which bf16 does not use)
        if self.cfg.train.grad_clip:
            clip_gradients(optimizer, self.model.parameters(), self.cfg.train.grad_clip)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.strategy.before_step(self, batch, self.global_step)
        out = self(batch)
        values = self._check_finite(out)
        self._last_terms = (list(out.terms), values.detach())
        self.tokens_seen += batch.lengths.sum()
        self._log_window(out, values, batch.size)
        return out.loss

    def _log_window(self, out: Any, values: torch.Tensor, batch_size: int) -> None:
        """Log the mean of each training term over the steps since the last logged one.

        Every ``train.log_every`` steps (Lightning writes logged values on exactly those steps) and on
        the last step; a single batch of length-bucketed data is far too noisy to read a curve from.
        The running sums are kept on the device (no host sync) and travel in ``resume.ckpt``.
        """
        self._window.add(values)
        step = self.global_step
        if (step + 1) % self.cfg.train.log_every != 0 and step + 1 != self.cfg.train.max_steps:
            return
        mean = self._window.take()
        self.log_dict({f"train/{k}": v for k, v in zip(out.terms, mean)}, on_step=True, on_epoch=False,
                      batch_size=batch_size)
        self.log("train/beta", out.beta, on_step=True, on_epoch=False, batch_size=batch_size)

    def _check_finite(self, out: Any) -> torch.Tensor:
        """Stop the run at the first NaN/inf loss, naming the step and the last finite terms.

        The first bad step and the last finite terms are tracked on the device; the host looks at
        them every step on CPU (free) and every ``train.log_every`` steps on an accelerator, so
        training has no per-step host synchronisation there. The message is the same either way.
        Returns the step's terms stacked (``n terms``, in ``out.terms`` order) for the logging window.
        """
        step = self.global_step
        names = list(out.terms)
        values = torch.stack([v.detach().float() for v in out.terms.values()])  # n terms
        bad = ~torch.isfinite(out.loss.detach())
        if self._last_finite is None:
            self._last_finite = (torch.full((), -1, device=values.device), torch.full_like(values, float("nan")),
                                 torch.full((), -1, device=values.device), values)
        first_bad, last_values, last_step, bad_values = self._last_finite
        first_bad = torch.where(bad & (first_bad < 0), torch.full_like(first_bad, step), first_bad)
        ok = ~bad & (first_bad < 0)
        last_values = torch.where(ok, values, last_values)
        last_step = torch.where(ok, torch.full_like(last_step, step), last_step)
        bad_values = torch.where(bad & (first_bad == step), values, bad_values)
        self._last_finite = (first_bad, last_values, last_step, bad_values)
        if values.device.type != "cpu" and (step + 1) % self.cfg.train.log_every != 0:
            return values
        if int(first_bad) < 0:
            return values
        terms = ", ".join(f"{k} {float(v):.4g}" for k, v in zip(names, bad_values.tolist()))
        if int(last_step) < 0:
            before = "no finite loss before it"
        else:
            before = f"last finite at step {int(last_step)}: " + ", ".join(
                f"{k} {float(v):.4g}" for k, v in zip(names, last_values.tolist()))
        loss = bad_values[names.index("loss")].item() if "loss" in names else float("nan")
        raise NonFiniteLossError(
            f"the training loss is {loss} at step {int(first_bad)} ({terms}); {before}. "
            "Lower train.lr or set train.grad_clip"
        )

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        post = self.model.encode(batch)
        rec = self.model.reconstruction_nll(batch, post.rsample())
        kl = self.model.prior.kl(post).per_dim.sum(-1)
        sync = self.trainer.world_size > 1
        self.log("val/neg_elbo", (rec + kl).mean(), on_epoch=True, batch_size=batch.size, sync_dist=sync)
        self.log("val/kl", kl.mean(), on_epoch=True, batch_size=batch.size, sync_dist=sync)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        if t.optimizer == "sgd":
            return torch.optim.SGD(self.model.parameters(), lr=t.lr)
        return adam(self.model.parameters(), t.lr)


def clip_gradients(optimizer: torch.optim.Optimizer, params: Any, max_norm: float) -> None:
    """Scale the gradients so that their global L2 norm is at most ``max_norm`` (``clip_grad_norm_``).

    For the fused Adam the scaling is left to its kernel, which divides every gradient by
    ``optimizer.grad_scale`` as it reads it: the same update as ``clip_grad_norm_`` followed by the
    step, with one pass over the 10 M gradients fewer (about 4 ms of a PTB step on 2 cores in a
    micro-benchmark; see docs/results/speed.md). ``tests/test_fast_paths.py`` checks that both give the same parameters.
    """
    fused = isinstance(optimizer, torch.optim.Adam) and optimizer.defaults.get("fused")
    if not fused:
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    norm = torch.nn.utils.get_total_norm(grads)
    # clip_grad_norm_ multiplies by max_norm / (norm + 1e-6) when that is below 1
    optimizer.grad_scale = torch.clamp((norm + 1e-6) / max_norm, min=1.0).to(torch.float32)


def adam(params: Any, lr: float) -> torch.optim.Optimizer:
    """Adam with the fused kernel (the same update, one pass over all parameters: 8x faster than the
    per-tensor loop on CPU for the PTB model's 10M parameters, measured in benchmarks/speed)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


def build_strategy(cfg: ExperimentConfig, model: SequenceVAE) -> Strategy:
    """The training strategy that ``cfg.strategy`` names, through the registry."""
    return get_registry("strategy").get(cfg.strategy.kind)(cfg.strategy, model.ctx)


def _versions() -> dict[str, str]:
    import lightning

    from seqvae import __version__

    return {"seqvae": __version__, "torch": str(torch.__version__), "lightning": str(lightning.__version__),
            "python": platform.python_version()}


def save_checkpoint(path: Path, model: SequenceVAE, cfg: ExperimentConfig, vocab: list[str]) -> None:
    """A self-describing checkpoint (config + vocabulary + weights), loadable with ``weights_only``."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": cfg.model_dump(mode="json"),
        "vocab": vocab,
        "state_dict": model.state_dict(),
        "versions": _versions(),
        "components": component_provenance(cfg),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[SequenceVAE, ExperimentConfig, Any]:
    """Rebuild a model from a checkpoint through the registry; never executes code from the file."""
    from seqvae.config import validate_experiment
    from seqvae.data.vocab import Vocab

    path = Path(path)
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ValueError(f"{path}: not a readable seqvae checkpoint ({type(exc).__name__}: {first})") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a seqvae checkpoint (expected format {CHECKPOINT_FORMAT})")
    try:
        cfg = validate_experiment(payload["config"], source=f"config stored in {path}")
    except ConfigError as exc:
        raise ConfigError(f"{exc}{_missing_providers(payload.get('components') or {})}") from None
    vocab = Vocab(payload["vocab"])
    model = build_model(cfg, vocab)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ValueError(f"{path}: the weights do not fit the stored config ({first})") from None
    return model, cfg, vocab


def _missing_providers(components: dict[str, str]) -> str:
    """``; decoder 'x' came from pkg==1.0: install that package ...`` for each stored component not installed now."""
    from seqvae.registry import RegistryError

    lines = []
    for key, provider in components.items():
        kind, _, name = key.partition(":")
        try:
            get_registry(kind).get(name)
        except (RegistryError, ValueError):
            lines.append(f"; {kind} '{name}' came from {provider}: install that package to load this checkpoint")
    return "".join(lines)


def load_corpus(dataset: ComponentConfig, cache_dir: str | Path | None = None) -> Corpus:
    """Build the corpus that a dataset config names (``cfg.data.dataset``) through the registry.

    Raises:
        seqvae.data.corpora.CorpusError: bad corpus input, naming the file and line.
    """
    builder = get_registry("dataset").get(dataset.kind)(dataset)
    return builder.load(Path(cache_dir) if cache_dir else default_cache_dir())


def evaluate_run(
    model: SequenceVAE,
    cfg: ExperimentConfig,
    corpus: Corpus,
    *,
    split: str | None = None,
    iw_samples: int | None = None,
    device: torch.device | str = "cpu",
    checkpoint: Path | None = None,
    precision: str = "32-true",
) -> dict[str, Any]:
    """The metric set of ``model`` on a split of ``corpus`` with the settings of ``cfg.eval``.

    ``split`` and ``iw_samples`` override the config's. ``precision="bf16-mixed"`` evaluates under
    bf16 autocast on ``device`` (matrix products in bf16, the posterior, the KL, every log-sum-exp and
    every sum in float32); it is recorded as ``eval_precision``. Timing is added as ``eval_seconds``. With
    ``checkpoint`` (the file the model was loaded from or saved to), the running sums are kept in
    ``eval-partial-<split>-k<K>.pt`` next to it, so an interrupted evaluation continues where it
    stopped (for this same checkpoint file) instead of starting over.
    """
    e = cfg.eval
    split = split or e.split
    k = e.iw_samples if iw_samples is None else iw_samples
    start = time.perf_counter()
    batches = eval_batches(corpus.split(split), corpus.vocab, cfg.data.eval_batch_size)
    partial, key = None, ""
    if checkpoint is not None and Path(checkpoint).exists():
        st = Path(checkpoint).stat()
        tag = "-bf16" if precision == "bf16-mixed" else ""
        partial = Path(checkpoint).with_name(f"eval-partial-{split}-k{k}{tag}.pt")
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
    earlier result is kept as ``eval-<split>-k<K>.json``. A folder holding another training config
    starts over.

    Returns:
        The ``result.json`` content.
    """
    run_dir = Path(run_dir)
    rank0 = is_rank_zero()  # in a multi-process launch only global rank 0 writes, evaluates and reports
    if rank0:
        run_dir.mkdir(parents=True, exist_ok=True)
    quiet_lightning(verbose=log.isEnabledFor(logging.DEBUG))
    t = cfg.train
    if corpus is None:
        corpus = load_corpus(cfg.data.dataset, cache_dir)
    trained = _finished_training(run_dir, cfg) if resume else None
    if trained is not None:
        log.info("%s: training already finished; evaluating the saved checkpoint", run_dir)
        if rank0:
            _adopt_eval_settings(run_dir, cfg)
        model, _, _ = load_checkpoint(run_dir / "checkpoint.pt")
        device = torch.device("cuda" if t.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
        model.to(device)
    else:
        ckpt = run_dir / RESUME_FILE
        if not (resume and ckpt.exists() and same_config(run_dir, cfg, training_only=True)):
            if rank0:  # a fresh start: nothing of an earlier run in this folder may be mistaken for this one's
                for name in (RESUME_FILE, "trained.json", "result.json", "logs/metrics.csv", f"logs/{PREVIOUS_METRICS}"):
                    (run_dir / name).unlink(missing_ok=True)
                (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
            ckpt = None
        else:
            log.info("%s: resuming the interrupted training from %s", run_dir, ckpt.name)
            if rank0:
                _adopt_eval_settings(run_dir, cfg)
        model, trained, device = _train(cfg, run_dir, corpus, progress, ckpt)
        if not rank0:
            return {"status": "ok", "rank": global_rank(), "run_dir": str(run_dir)}
    evaluated = evaluate_run(model, cfg, corpus, device=device, checkpoint=run_dir / "checkpoint.pt")
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
        **({"eval_resumed_batches": evaluated["eval_resumed_batches"]} if "eval_resumed_batches" in evaluated else {}),
        "data": {k: corpus.info[k] for k in ("sentences", "tokens", "vocab_size", "read", "unk_tokens")
                 if k in corpus.info},
        "versions": _versions(),
        "plugins": installed_plugins(),
        "command": sys.argv,
        "status": "ok",
    }
    result["plots"] = write_plots(run_dir, model, cfg, corpus)
    tmp = run_dir / "result.json.tmp"
    tmp.write_text(json.dumps(result, indent=2))
    tmp.replace(run_dir / "result.json")
    return result


PREVIOUS_METRICS = "metrics.before-resume.csv"
TRAINED_FIELDS = ("steps", "train_tokens", "world_size", "train_seconds", "train_tokens_per_second",
                  "strategy_state", "threads", "resumed")


def _adopt_eval_settings(run_dir: Path, cfg: ExperimentConfig) -> None:
    """Continue a run of ``cfg``'s training under ``cfg``'s evaluation settings, losing nothing.

    ``config.json`` becomes ``cfg``. A finished result under other settings is kept as
    ``eval-<split>-k<K>.json`` (the file ``seqvae eval`` writes) unless one is there already.
    """
    if same_config(run_dir, cfg):
        return
    try:
        old = json.loads((run_dir / "result.json").read_text())
    except (OSError, ValueError):
        old = None
    if old is not None and old.get("status") == "ok":
        keep = run_dir / f"eval-{old.get('split')}-k{old.get('metrics', {}).get('iw_samples', 0)}.json"
        if not keep.exists():
            keep.write_text(json.dumps({"checkpoint": str(run_dir / "checkpoint.pt"), **old}, indent=2))
            log.info("%s: the result under the earlier evaluation settings is kept in %s", run_dir, keep.name)
    (run_dir / "result.json").unlink(missing_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))


class ResumeCheckpoint(L.Callback):
    """Writes the full training state to ``path`` every ``every`` steps, atomically (temp file + rename).

    A kill at any moment leaves either the previous complete checkpoint or the new one, never a torn
    file. After a SIGTERM the state of the step that just finished is written too, so a pre-empted
    run loses nothing. At a step that also validates (``val_every``), the state is written after the
    validation, so that a resume does not skip it.
    """

    def __init__(self, path: Path, every: int | None, val_every: int | None = None):
        self.path, self.every, self.val_every = Path(path), every, val_every
        self._after_validation = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        due = bool(self.every) and step % self.every == 0
        if (due or trainer.received_sigterm) and step < (trainer.max_steps or 0):
            if due and not trainer.received_sigterm and self.val_every and step % self.val_every == 0:
                self._after_validation = True
                return
            self._save(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_validation:
            self._after_validation = False
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        trainer.save_checkpoint(tmp)  # every process calls it; global rank 0 writes
        if trainer.is_global_zero:
            tmp.replace(self.path)


class Heartbeat(L.Callback):
    """Without a progress bar (no terminal, CI, a batch job): one log line every ``every`` seconds.

    The line gives the step, the mean loss, reconstruction and KL of the steps since the last line,
    and the training tokens per second over that time, so a long run is never silent.
    """

    def __init__(self, every: float = 60.0):
        self.every = every
        self._last = time.perf_counter()
        self._tokens: int | None = None  # tokens seen when the last line was written (None: not started)
        self._terms = TermMeans()

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if self._tokens is None:  # the first step of this process (a resumed run starts with its count)
            self._last, self._tokens = time.perf_counter(), int(pl_module.tokens_seen)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        if not trainer.is_global_zero or pl_module._last_terms is None or self._tokens is None:
            return
        names, values = pl_module._last_terms
        self._terms.add(values)
        now = time.perf_counter()
        if now - self._last < self.every and trainer.global_step < (trainer.max_steps or 0):
            return
        tokens = int(pl_module.tokens_seen)
        mean = dict(zip(names, self._terms.take().tolist()))
        log.info("step %d/%d: loss %.3f, rec %.3f, kl %.3f, %.0f tokens/s", trainer.global_step, trainer.max_steps,
                 mean.get("loss", float("nan")), mean.get("rec", float("nan")), mean.get("kl", float("nan")),
                 (tokens - self._tokens) / max(now - self._last, 1e-9))
        self._last, self._tokens = now, tokens


def _checkpoint_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint (loaded without executing code)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [""])[0]
        raise ResumeError(f"{path}: not a readable resume checkpoint ({type(exc).__name__}: {first})") from None


def same_config(run_dir: Path, cfg: ExperimentConfig, *, training_only: bool = False) -> bool:
    """Whether ``run_dir/config.json`` is ``cfg`` (with ``training_only``: all but its ``eval`` section).

    The stored config is validated again with today's defaults before the comparison, so a config
    field added later, whose default keeps the old behaviour, does not disown older runs.
    """
    from seqvae.config import validate_experiment

    try:
        stored = validate_experiment(json.loads((run_dir / "config.json").read_text()))
    except (OSError, ValueError, ConfigError):
        return False
    return _comparable(stored, training_only) == _comparable(cfg, training_only)


def _comparable(cfg: ExperimentConfig, training_only: bool) -> dict[str, Any]:
    """``cfg`` as plain data; without the ``eval`` section when only the training matters.

    The evaluation settings (split, K, AU threshold, collapse rule) are read after training only, so
    a finished or interrupted training serves any of them.
    """
    data = cfg.model_dump(mode="json")
    if training_only:
        data.pop("eval")
    return data


def _keep_metrics_before(logs: Path, step: int) -> None:
    """Before a resume at ``step``: keep the logged rows of the steps before it in ``PREVIOUS_METRICS``.

    Lightning's CSV logger starts ``metrics.csv`` afresh; rows logged after the checkpoint (the
    resumed run logs them again) are dropped. Repeated resumes keep accumulating.
    """
    import csv

    rows: list[dict[str, str]] = []
    for name in (PREVIOUS_METRICS, "metrics.csv"):
        f = logs / name
        if f.exists():
            with open(f, newline="", encoding="utf-8") as fh:
                rows += [r for r in csv.DictReader(fh) if r.get("step") and int(float(r["step"])) < step]
    _write_rows(logs / PREVIOUS_METRICS, rows)
    (logs / "metrics.csv").unlink(missing_ok=True)


def _write_rows(path: Path, rows: list[dict[str, str]]) -> None:
    import csv

    keys: list[str] = []
    for r in rows:
        keys += [k for k in r if k not in keys]
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def _join_metrics(logs: Path) -> None:
    """After a resumed training: ``metrics.csv`` = the rows kept from before the resume + the new ones."""
    import csv

    before = logs / PREVIOUS_METRICS
    if not before.exists():
        return
    rows = []
    for f in (before, logs / "metrics.csv"):
        if f.exists():
            with open(f, newline="", encoding="utf-8") as fh:
                rows += list(csv.DictReader(fh))
    _write_rows(logs / "metrics.csv", rows)
    before.unlink()


def _train(
    cfg: ExperimentConfig, run_dir: Path, corpus: Corpus, progress: bool, resume_from: Path | None = None
) -> tuple[SequenceVAE, dict, Any]:
    """Fit ``cfg`` with Lightning (from ``resume_from`` when given); save the checkpoint and ``trained.json``.

    Returns (model, trained, device).
    """
    t = cfg.train
    L.seed_everything(t.seed, workers=True, verbose=False)
    model = build_model(cfg, corpus.vocab)
    system = VAESystem(model, cfg)
    dm = TextDataModule(corpus, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.bucket_factor, t.seed)
    if resume_from is not None:
        step = _checkpoint_step(resume_from)
        if is_rank_zero():
            _keep_metrics_before(run_dir / "logs", step)
    recipe = ValidationRecipe(t)  # before the checkpoint: a state written after a validation includes it
    callbacks = [recipe, ResumeCheckpoint(run_dir / RESUME_FILE, t.checkpoint_every, t.val_every)]
    if not progress:
        callbacks.append(Heartbeat(HEARTBEAT_SECONDS))
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=t.devices,
        num_nodes=t.num_nodes,
        strategy=t.distributed if t.world_size > 1 else "auto",
        precision=t.precision,
        max_steps=t.max_steps,
        max_epochs=-1,
        # rows reach metrics.csv at the end of the step that logs them, so a kill loses none that a resume keeps
        logger=CSVLogger(str(run_dir), name="logs", version="", flush_logs_every_n_steps=1),
        callbacks=callbacks,
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        log_every_n_steps=t.log_every,
        # every val_every steps (counted across epochs), and once at the end below; never without val_every
        val_check_interval=t.val_every or t.max_steps + 1,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        deterministic=t.deterministic,
    )
    with warnings.catch_warnings():
        for msg in (".*does not have many workers.*", ".*IterableDataset.*", ".*LeafSpec.*",
                    ".*smaller than the logging interval.*", ".*exists and is not empty.*"):
            warnings.filterwarnings("ignore", message=msg)
        try:
            trainer.fit(system, datamodule=dm, ckpt_path=resume_from, weights_only=True)
        except SIGTERMException:  # Lightning's SystemExit with code 0: say what happened instead
            raise RunInterrupted(
                f"{run_dir}: stopped by SIGTERM at step {trainer.global_step}; its state is saved in {RESUME_FILE}"
            ) from None
        if not recipe.history or recipe.history[-1]["step"] != trainer.global_step:
            recipe.final = True  # every run ends with a validation of its last weights, however short
            trainer.validate(system, datamodule=dm, verbose=False, weights_only=True)
    kept_best = recipe.restore_best(model)
    train_s = system.train_seconds()
    tokens = int(system.tokens_seen)
    if not trainer.is_global_zero:
        return model, {}, system.device
    _join_metrics(run_dir / "logs")
    save_checkpoint(run_dir / "checkpoint.pt", model, cfg, corpus.vocab.to_list())
    trained = {
        "steps": int(trainer.global_step),
        "train_tokens": tokens,
        "world_size": trainer.world_size,
        "train_seconds": round(train_s, 3),
        "train_tokens_per_second": round(tokens / train_s, 1) if train_s > 0 else None,
        "strategy_state": system.strategy.state(),
        "validation": {**recipe.summary(), "checkpoint_weights": "best" if kept_best else "last"},
        "threads": torch.get_num_threads(),  # CPU threads of this process: train_seconds depends on them
    }
    if resume_from is not None:
        trained["resumed"] = True
    tmp = run_dir / "trained.json.tmp"
    tmp.write_text(json.dumps({"config": cfg.model_dump(mode="json"), **trained}, indent=2))
    tmp.replace(run_dir / "trained.json")
    (run_dir / RESUME_FILE).unlink(missing_ok=True)
    return model, trained, system.device


def _finished_training(run_dir: Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """What ``run_dir`` records of a finished training of ``cfg`` (its evaluation settings may differ).

    The record is ``trained.json`` (less its config); a folder finished before that file existed
    has only ``result.json``, whose training fields serve the same purpose. None when there is no
    finished training of this config, or no ``checkpoint.pt``.
    """
    from seqvae.config import validate_experiment

    if not (run_dir / "checkpoint.pt").exists():
        return None
    try:
        data = json.loads((run_dir / "trained.json").read_text())
        stored = validate_experiment(data.pop("config"))
    except (OSError, ValueError, KeyError):
        try:
            result = json.loads((run_dir / "result.json").read_text())
        except (OSError, ValueError):
            return None
        if result.get("status") != "ok" or not same_config(run_dir, cfg, training_only=True):
            return None
        return {k: result[k] for k in TRAINED_FIELDS if k in result}
    return data if _comparable(stored, True) == _comparable(cfg, True) else None


def write_plots(run_dir: Path, model: SequenceVAE, cfg: ExperimentConfig, corpus: Corpus) -> list[str]:
    """``training.png`` and, for a 2-d latent, ``latent.png`` in ``run_dir``; names of those written.

    A plotting failure is logged, never raised: it must not cost a finished run.
    """
    from seqvae.bench.plots import plot_latent, plot_training

    written = []
    names = cfg.component_names()
    title = f"{names['encoder']}/{names['decoder']}/{names['prior']}, {names['schedule']}"
    try:
        if plot_training(run_dir / "logs" / "metrics.csv", run_dir / "training.png", title) is not None:
            written.append("training.png")
        if model.ctx.latent_dim == 2:
            means, labels = [], []
            model.eval()
            with torch.no_grad():
                for batch in eval_batches(corpus.split(cfg.eval.split), corpus.vocab, cfg.data.eval_batch_size):
                    means.append(model.encode(batch.to(next(model.parameters()).device)).mean.float().cpu())
                    if batch.labels is not None:
                        labels.append(batch.labels)
            lab = torch.cat(labels).numpy() if labels else None
            plot_latent(torch.cat(means).numpy(), lab, run_dir / "latent.png",
                        f"posterior means on {cfg.eval.split} ({title})")
            written.append("latent.png")
    except Exception as exc:  # plots are a convenience; the run's numbers are already safe
        log.warning("could not write plots into %s: %s", run_dir, exc)
    return written
