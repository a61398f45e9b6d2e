"""The papers' training recipes as a Lightning callback: plateau decay, early stopping, best weights.

``ValidationRecipe`` watches the validation -ELBO (``val/neg_elbo``, logged every
``train.val_every`` steps and once more at the end of every run). It keeps the best value and a
copy of the weights that gave it, multiplies the learning rate by ``train.lr_decay.factor`` after
``patience`` validations without a new best (restoring the best weights and resetting the
optimizer's state, as He et al. 2019 do), stops after ``max_decays`` decays or after
``train.early_stop`` validations without a new best, and with ``train.keep = "best"`` puts the best
weights back into the model when training ends, so that they become ``checkpoint.pt``. Its state,
the best weights included, travels in ``resume.ckpt``, so a resumed run takes the same decisions.

The value compared is the validation -ELBO, or ``rec + w * KL`` when the training strategy says so
(``Strategy.validation_kl_weight``: 0 in an autoencoder phase). Where the recipe would stop, a
strategy with another phase (``Strategy.has_next_phase``: autoencoder pretraining until converged,
then the VAE) gets the best weights of the phase back and starts the next one, and the recipe starts
over: the configured learning rate, no best, no decays, ``lr_decay.start_step`` counted from there.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import lightning as L
import torch

from seqvae.config import TrainConfig

__all__ = ["ValidationRecipe"]

log = logging.getLogger(__name__)

METRIC = "val/neg_elbo"
KL = "val/kl"


class ValidationRecipe(L.Callback):
    """Best-validation tracking, learning-rate decay on a plateau and early stopping (see the module doc)."""

    def __init__(self, train: TrainConfig):
        self.cfg = train
        self.best = math.inf
        self.best_step = -1
        self.bad = 0  # validations in a row without a new best
        self.decays = 0
        self.stopped: str | None = None
        self.history: list[dict[str, float]] = []
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_optimizer: dict[str, Any] | None = None  # with lr_decay.optimizer_state: best
        self.final = False  # set for the validation that closes a run: record it, decide nothing
        self.phase, self.phase_start = 0, 0  # phases of a strategy that has them (has_next_phase)
        self.phases: list[dict[str, Any]] = []  # how each phase before the current one ended

    @property
    def _keeps_optimizer(self) -> bool:
        d = self.cfg.lr_decay
        return d is not None and d.restore_best and d.optimizer_state == "best"

    @property
    def _keeps_weights(self) -> bool:
        return self.cfg.keep == "best" or (self.cfg.lr_decay is not None and self.cfg.lr_decay.restore_best)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or METRIC not in trainer.callback_metrics:
            return
        neg_elbo, step = float(trainer.callback_metrics[METRIC]), int(trainer.global_step)
        if self.history and self.history[-1]["step"] == step:
            return  # this step was validated already (a resume repeats the last validation)
        strategy = getattr(pl_module, "strategy", None)
        w = 1.0 if strategy is None else float(strategy.validation_kl_weight(step))
        value = neg_elbo if w == 1.0 else neg_elbo - (1.0 - w) * float(trainer.callback_metrics[KL])
        optimizer = trainer.optimizers[0] if trainer.optimizers else None
        lr = float(optimizer.param_groups[0]["lr"]) if optimizer is not None else float("nan")
        entry = {"step": step, "neg_elbo": neg_elbo, "lr": lr}
        if w != 1.0 or self.phase:
            entry.update(phase=self.phase, objective=value)
        self.history.append(entry)
        if value < self.best:
            self.best, self.best_step, self.bad = value, step, 0
            if self._keeps_weights:
                self.best_state = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.model.state_dict().items()}
            if self._keeps_optimizer and optimizer is not None:
                self.best_optimizer = _to_cpu(optimizer.state_dict())
        else:
            self.bad += 1
        if self.final:
            return
        decay = self.cfg.lr_decay
        if (decay is not None and self.bad >= decay.patience and step - self.phase_start >= decay.start_step
                and optimizer is not None):
            self.decays += 1
            self.bad = 0
            new_lr = [group["lr"] * decay.factor for group in optimizer.param_groups]
            restored = decay.restore_best and self.best_state is not None
            if restored:
                pl_module.model.load_state_dict(self.best_state)
                if self._keeps_optimizer and self.best_optimizer is not None:
                    optimizer.load_state_dict(self.best_optimizer)  # the moments that go with those weights
                else:
                    optimizer.state.clear()  # a fresh optimizer state for the restored weights
            for group, lr in zip(optimizer.param_groups, new_lr):
                group["lr"] = lr
            log.info("step %d: no new best -ELBO in %d validations (best %.3f at step %d); learning rate x %g -> %.3g%s "
                     "(decay %d of %d)", step, decay.patience, self.best, self.best_step, decay.factor,
                     optimizer.param_groups[0]["lr"], ", best weights restored" if restored else "", self.decays,
                     decay.max_decays)
            if self.decays >= decay.max_decays:
                self.converged(trainer, pl_module, f"{self.decays} learning-rate decays at step {step}")
                return
        if self.cfg.early_stop is not None and self.bad >= self.cfg.early_stop:
            self.converged(trainer, pl_module, f"{self.bad} validations without a new best at step {step}")

    def converged(self, trainer: L.Trainer, pl_module: L.LightningModule, why: str) -> None:
        """The phase has converged: the strategy's next phase starts, or training stops."""
        step = int(trainer.global_step)
        strategy = getattr(pl_module, "strategy", None)
        if strategy is None or not strategy.has_next_phase(step):
            self.stop(trainer, why)
            return
        if self.best_state is not None:  # the next phase starts from the best weights of this one
            pl_module.model.load_state_dict(self.best_state)
        strategy.next_phase(pl_module.context, step)
        for optimizer in trainer.optimizers:  # the decays were this recipe's; the optimizer's state is the strategy's
            for group in optimizer.param_groups:
                group["lr"] = self.cfg.lr
        log.info("step %d: phase %d converged (%s; best %.3f at step %d); phase %d starts at lr %g",
                 step, self.phase, why, self.best, self.best_step, self.phase + 1, self.cfg.lr)
        self.phases.append({"phase": self.phase, "ended_at_step": step, "why": why, "best": self.best,
                            "best_step": self.best_step, "lr_decays": self.decays})
        self.phase, self.phase_start = self.phase + 1, step
        self.best, self.best_step, self.bad, self.decays = math.inf, -1, 0, 0
        self.best_state = self.best_optimizer = None

    def stop(self, trainer: L.Trainer, why: str) -> None:
        """End training after this step; the first reason given is the one recorded."""
        if self.stopped is None:
            self.stopped = why
        trainer.should_stop = True

    def restore_best(self, model: torch.nn.Module) -> bool:
        """Load the best validation's weights into ``model`` when ``keep`` is ``best``; whether it did."""
        if self.cfg.keep != "best" or self.best_state is None:
            return False
        model.load_state_dict(self.best_state)
        return True

    def summary(self) -> dict[str, Any]:
        """What ``trained.json`` records of the validations and the recipe's decisions."""
        return {
            "best_neg_elbo": None if math.isinf(self.best) else self.best,
            "best_step": self.best_step,
            "final_neg_elbo": self.history[-1]["neg_elbo"] if self.history else None,
            "lr_decays": self.decays,
            "stopped_early": self.stopped,
            "kept": self.cfg.keep,
            "validations": self.history,
            **({"phases": self.phases} if self.phases else {}),
        }

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best, "best_step": self.best_step, "bad": self.bad, "decays": self.decays,
                "stopped": self.stopped, "history": self.history, "best_state": self.best_state,
                "best_optimizer": self.best_optimizer, "phase": self.phase, "phase_start": self.phase_start,
                "phases": self.phases}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best, self.best_step, self.bad = state["best"], state["best_step"], state["bad"]
        self.decays, self.stopped, self.history = state["decays"], state["stopped"], state["history"]
        self.best_state = state["best_state"]
        self.best_optimizer = state.get("best_optimizer")
        self.phase, self.phase_start = state.get("phase", 0), state.get("phase_start", 0)
        self.phases = state.get("phases", [])


def _to_cpu(value: Any) -> Any:
    """A deep copy of an optimizer state dict with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_cpu(v) for v in value)
    return value

