"""Lightning callbacks of a run: the resumable training state and the heartbeat line."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import lightning as L

from seqvae.run_dir import temporary_path
from seqvae.training.system import TermMeans

__all__ = ["CtrlC", "Heartbeat", "ResumeCheckpoint", "StepProgressBar", "StopRequested"]

log = logging.getLogger(__name__)


class StopRequested(Exception):
    """Training stopped after a step at the user's request (Ctrl-C); the state of that step is saved."""


class CtrlC:
    """While training: the first Ctrl-C (SIGINT) asks to stop after the current step, as SIGTERM does.

    A context manager around ``trainer.fit``. The step that is running finishes, its state is saved
    to ``resume.ckpt`` and ``StopRequested`` ends the fit; a second Ctrl-C interrupts at once
    (Python's default). Outside the main thread (where signals cannot be caught) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def _handle(self, signum: int, frame: Any) -> None:
        import signal

        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C interrupts now
        log.warning("Ctrl-C: stopping after this step and saving its state (Ctrl-C again to stop at once)")

    def __enter__(self) -> CtrlC:
        import signal
        import threading

        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        import signal

        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None


class ResumeCheckpoint(L.Callback):
    """Writes the full training state to ``path`` every ``every`` steps, atomically (temp file + rename).

    A kill at any moment leaves either the previous complete checkpoint or the new one, never a torn
    file. After a SIGTERM the state of the step that just finished is written too, so a pre-empted
    run loses nothing. At a step that also validates (``val_every``), the state is written after the
    validation, so that a resume does not skip it.
    """

    def __init__(self, path: Path, every: int | None, val_every: int | None = None, ctrl_c: CtrlC | None = None):
        self.path, self.every, self.val_every = Path(path), every, val_every
        self.ctrl_c = ctrl_c
        self._after_validation = False

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args: Any) -> None:
        step = trainer.global_step
        due = bool(self.every) and step % self.every == 0
        stop = trainer.received_sigterm or (self.ctrl_c is not None and self.ctrl_c.requested)
        if (due or stop) and step < (trainer.max_steps or 0):
            if due and not stop and self.val_every and step % self.val_every == 0:
                self._after_validation = True
                return
            self._save(trainer)
            if self.ctrl_c is not None and self.ctrl_c.requested and not trainer.received_sigterm:
                raise StopRequested(f"stopped by Ctrl-C at step {step}")

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_validation:
            self._after_validation = False
            self._save(trainer)

    def _save(self, trainer: L.Trainer) -> None:
        tmp = temporary_path(self.path)
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


def _rich_bar() -> type:
    from lightning.pytorch.callbacks import RichProgressBar

    return RichProgressBar


class StepProgressBar(_rich_bar()):  # type: ignore[misc]
    """Lightning's rich progress bar, labelled by steps: a run is ``max_steps`` long, not a number of epochs.

    With ``max_epochs=-1`` (seqvae trains to ``train.max_steps``) Lightning's own label reads
    ``Epoch 0/-2``; this one reads ``Epoch 1 of 13 (4,000 steps)``, the epochs that ``max_steps`` makes.
    """

    def _get_train_description(self, current_epoch: int) -> str:
        t = self.trainer
        per_epoch = t.num_training_batches
        if isinstance(per_epoch, int) and per_epoch > 0:
            return f"Epoch {current_epoch + 1} of {-(-t.max_steps // per_epoch)} ({t.max_steps:,} steps)"
        return f"Epoch {current_epoch + 1} ({t.max_steps:,} steps)"

