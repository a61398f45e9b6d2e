"""The LightningModule (``VAESystem``), the optimizer helpers and the running means of the training terms."""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import time
from typing import Any

import lightning as L
import torch

from seqvae.config import ExperimentConfig
from seqvae.data.batch import Batch
from seqvae.interfaces import Strategy, TrainingContext, kl_weight
from seqvae.model import SequenceVAE
from seqvae.optim import adam, clip_gradients, sgd, sparse_embedding_gradients
from seqvae.registry import get_registry
from seqvae.training.checkpoint import rng_state, set_rng_state

__all__ = ["NonFiniteLossError", "TermMeans", "VAESystem", "build_strategy", "cached_autocast", "cosine_restart_lr",
           "quiet_lightning"]


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite; the message names the step and the last finite values."""


def quiet_lightning(verbose: bool = False) -> None:
    """Route Lightning's chatter (GPU/TPU banners, tips) through our logging at WARNING level."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        lg = logging.getLogger(name)
        lg.handlers.clear()
        lg.propagate = True
        lg.setLevel(logging.INFO if verbose else logging.WARNING)


@functools.cache
def _autocast_cache_is_safe(device_type: str) -> bool:
    """Whether this torch's autocast cache keeps gradients when a cast is first made under ``no_grad``.

    Older releases cached the cast made inside ``torch.no_grad()`` and handed that copy, with no
    gradient history, to a later use with gradients (pytorch/pytorch#158232): the weight then got no
    gradient. Newer ones always cache a copy with history. A two-element probe tells them apart.
    """
    device = torch.device(device_type)
    w = torch.ones(2, 2, device=device, requires_grad=True)
    x = torch.ones(2, 2, device=device)
    try:
        with torch.autocast(device_type, dtype=torch.bfloat16, cache_enabled=True):
            with torch.no_grad():
                torch.mm(x, w)
            return torch.mm(x, w).requires_grad
    except RuntimeError:  # no bf16 autocast on this device type
        return False


def cached_autocast(device: torch.device) -> contextlib.AbstractContextManager:
    """Re-enter the running autocast with its weight cache on (a no-op when autocast is off).

    Lightning's ``bf16-mixed`` runs the step under ``torch.autocast(..., cache_enabled=False)`` (a
    workaround for the torch bug that ``_autocast_cache_is_safe`` probes), so a weight used at every
    time step of a recurrence written with per-step operations (PyTorch's GRU on CPU: the recurrent
    weight and bias in each step's ``linear``) is cast to bf16 once per time step, and each step's
    weight gradient is cast back and accumulated separately. With the cache the weight is cast once
    per step of training, as in a plain ``torch.autocast`` loop; its per-step gradients are then summed
    in bf16 before the one cast back (measured: the GRU's ``weight_hh`` gradient 0.9 % from float32
    instead of 0.7 %; everything else unchanged). The cache lives until the outermost autocast
    context exits, i.e. the end of Lightning's forward context, and no parameter changes inside it.
    """
    kind = device.type
    if not torch.is_autocast_enabled(kind) or torch.is_autocast_cache_enabled() or not _autocast_cache_is_safe(kind):
        return contextlib.nullcontext()
    return torch.autocast(kind, dtype=torch.get_autocast_dtype(kind), cache_enabled=True)


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
        """The mean ``n`` (one per term) over the steps added since the last ``take``; the window is empty after it."""
        mean = self.sums / self.steps
        self.sums, self.steps = None, 0
        return mean

    def state(self) -> tuple[torch.Tensor, int] | None:
        """The open window for ``resume.ckpt``: (sums ``n`` on the CPU, steps), or None when empty."""
        return None if self.sums is None else (self.sums.detach().cpu(), self.steps)

    def load_state(self, state: tuple[torch.Tensor, int] | None, device: torch.device) -> None:
        """Reopen a window that ``state`` saved (sums ``n``), on ``device``."""
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
        self.sessions_before: list[dict[str, Any]] = []  # the processes that trained before a resume
        self._started = time.perf_counter()
        self._session_start_step = 0
        self._restored: dict[str, Any] | None = None
        self._last_finite: tuple[torch.Tensor, ...] | None = None  # see _check_finite
        self._window = TermMeans()  # the training terms since the last logged step
        self._last_terms: tuple[list[str], torch.Tensor] | None = None  # the last step's (names, values)
        self._train_rng: torch.Tensor | None = None

    def forward(self, batch: Batch):
        step, total = self.global_step, self.cfg.train.max_steps
        beta = kl_weight(self.strategy, self.model.schedule, step, total)
        with cached_autocast(self.device):
            return self.model(batch, step=step, total_steps=total, beta=beta)

    def on_train_batch_start(self, batch: Any, batch_idx: int) -> None:
        period = self.cfg.train.lr_cosine_period
        if period is not None:  # set from the step at every step: a resume continues the same curve
            lr = cosine_restart_lr(self.cfg.train.lr, int(self.global_step), period)
            for optimizer in self.trainer.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = lr

    def on_train_end(self) -> None:
        if self.trainer.world_size > 1:  # every process counted its own share of the batches
            self.tokens_seen.copy_(self.trainer.strategy.reduce(self.tokens_seen, reduce_op="sum").long())

    def on_train_start(self) -> None:
        self._started = time.perf_counter()
        self.context = TrainingContext(model=self.model, cfg=self.cfg, corpus=self.trainer.datamodule.corpus,
                                       optimizers=self.trainer.optimizers, device=self.device)
        self.strategy.on_train_start(self.context)
        if self._restored is not None:  # resumed: the strategy's state and every RNG as they were saved
            self.strategy.load_state_dict(self._restored["strategy"])
            self.tokens_seen.fill_(self._restored["tokens_seen"])
            self._window.load_state(self._restored.get("log_window"), self.tokens_seen.device)
            self.train_seconds_before = self._restored["train_seconds"]
            # a state saved before sessions were recorded: one earlier session of unknown threads
            self.sessions_before = self._restored.get("sessions") or [
                {"threads": None, "steps": int(self.global_step), "seconds": round(self.train_seconds_before, 3)}]
            set_rng_state(self._restored["rng"])
            self._restored = None
        self._session_start_step = int(self.global_step)

    def train_seconds(self) -> float:
        """Seconds spent training, summed over the resumes of this run."""
        return self.train_seconds_before + time.perf_counter() - self._started

    def sessions(self) -> list[dict[str, Any]]:
        """One entry per process that trained this run (a resume starts a new one): its CPU threads,
        the steps it took and its seconds. ``train_seconds`` is their sum; the threads are what the
        seconds mean, and they can differ between the parts of a run resumed on another machine."""
        current = {"threads": torch.get_num_threads(), "steps": int(self.global_step) - self._session_start_step,
                   "seconds": round(time.perf_counter() - self._started, 3)}
        return [*self.sessions_before, current]

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["seqvae"] = {
            "config": self.cfg.model_dump(mode="json"),
            "strategy": self.strategy.state_dict(),
            "tokens_seen": int(self.tokens_seen),
            "log_window": self._window.state(),
            "train_seconds": self.train_seconds(),
            "sessions": self.sessions(),
            "rng": rng_state(),
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
        self.strategy.before_optimizer_step(self.context, self.global_step)
        # clipped here, not by Lightning: its mixed-precision plugin refuses to clip for a fused
        # optimizer (it assumes a gradient scaler, which bf16 does not use)
        if self.cfg.train.grad_clip:
            clip_gradients(optimizer, self.model.parameters(), self.cfg.train.grad_clip)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.strategy.before_step(self.context, batch, self.global_step)
        out = self(batch)
        values = self._check_finite(out)
        self._last_terms = (list(out.terms), values.detach())
        self.tokens_seen += batch.lengths.sum()
        self._log_window(out, values, batch.size)
        return out.loss

    def _log_window(self, out: Any, values: torch.Tensor, batch_size: int) -> None:
        """Log the mean of each training term over the steps since the last logged one.

        Every ``train.log_interval`` steps (Lightning writes logged values on exactly those steps) and on
        the last step; a single batch of length-bucketed data is far too noisy to read a curve from.
        The running sums are kept on the device (no host sync) and travel in ``resume.ckpt``.
        """
        self._window.add(values)
        step = self.global_step
        if (step + 1) % self.cfg.train.log_interval != 0 and step + 1 != self.cfg.train.max_steps:
            return
        mean = self._window.take()
        self.log_dict({f"train/{k}": v for k, v in zip(out.terms, mean)}, on_step=True, on_epoch=False,
                      batch_size=batch_size)
        self.log("train/beta", out.beta, on_step=True, on_epoch=False, batch_size=batch_size)

    def _check_finite(self, out: Any) -> torch.Tensor:
        """Stop the run at the first NaN/inf loss, naming the step and the last finite terms.

        The first bad step and the last finite terms are tracked on the device; the host looks at
        them every step on CPU (free) and every ``train.log_interval`` steps on an accelerator, so
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
        if values.device.type != "cpu" and (step + 1) % self.cfg.train.log_interval != 0:
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
        with cached_autocast(self.device):
            post = self.model.encode(batch)
            rec = self.model.reconstruction_nll(batch, post.rsample())
            kl = self.model.prior.kl(post).per_dim.sum(-1)
        sync = self.trainer.world_size > 1
        self.log("val/neg_elbo", (rec + kl).mean(), on_epoch=True, batch_size=batch.size, sync_dist=sync)
        self.log("val/kl", kl.mean(), on_epoch=True, batch_size=batch.size, sync_dist=sync)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        t = self.cfg.train
        if t.optimizer == "sgd":
            if t.world_size == 1:  # data-parallel training all-reduces dense gradients only
                sparse_embedding_gradients(self.model)
            return sgd(self.model.parameters(), t.lr)
        return adam(self.model.parameters(), t.lr)


def cosine_restart_lr(lr: float, step: int, period: int) -> float:
    """The learning rate of ``step`` (0-based) under cosine restarts every ``period`` steps: ``lr`` at the
    first step of each period, falling along half a cosine towards 0 at its end (``train.lr_cosine_period``)."""
    return lr * 0.5 * (1.0 + math.cos(math.pi * (step % period) / period))


def build_strategy(cfg: ExperimentConfig, model: SequenceVAE) -> Strategy:
    """The training strategy that ``cfg.strategy`` names, through the registry."""
    return get_registry("strategy").get(cfg.strategy.kind)(cfg.strategy, model.ctx)
