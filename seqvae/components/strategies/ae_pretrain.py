"""``ae-pretrain``: autoencoder pretraining, then a fresh decoder (Li et al. 2019, "A Surprisingly Effective Fix").

Phase 1 trains with beta = 0: an autoencoder with a stochastic encoder. Then the decoder's parameters
are re-initialised (with the run's ``model.init``; and the optimizer's state cleared), and phase 2
trains the VAE, the schedule seeing the phase-2 step ``step - switch_step`` of ``max_steps - switch_step``.

When phase 1 ends is ``switch``:

* ``fraction`` (the default): after ``pretrain_fraction`` of ``train.max_steps``;
* ``converged``: when the validation recipe says the autoencoder has converged (its learning rate
  decayed ``train.lr_decay.max_decays`` times, or ``train.early_stop``), judging the plateau on the
  validation reconstruction, as Li et al. train their autoencoder to convergence before the VAE. The
  best autoencoder weights are restored, the decoder re-initialised, and the recipe starts over for
  phase 2 (the configured learning rate, its own decays and stop). ``train.max_steps`` bounds both
  phases together.

Li et al. pair it with free bits (``--regularizer free-bits`` with ``mode: dimension``, 0.25 nats/dim).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, Schedule, Strategy, TrainingContext

__all__ = ["AEPretrainStrategy"]


class AEPretrainStrategy(Strategy):
    """Autoencoder pretraining then VAE training, in one run of ``train.max_steps`` steps."""

    class Config(ComponentConfig):
        switch: Literal["fraction", "converged"] = Field(
            "fraction", description="When the autoencoder phase ends: after pretrain_fraction of the steps, or when "
                                    "the validation recipe finds it converged (needs train.val_every and lr_decay or "
                                    "early_stop).",
        )
        pretrain_fraction: float = Field(
            0.5, gt=0.0, lt=1.0, description="Share of train.max_steps spent as an autoencoder (switch: fraction).",
        )
        reset_decoder: bool = Field(True, description="Re-initialise the decoder when the VAE phase starts.")
        reset_optimizer: bool = Field(True, description="Clear the optimizer's state when the VAE phase starts.")

    def __init__(self, config: Config, ctx: BuildContext | None = None):
        super().__init__(config, ctx)
        self.switched_at: int | None = None

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        if not experiment.has_latent:
            return "needs a latent variable (the language-model baseline has none)"
        if experiment.train.world_size > 1:
            return "changes parameters outside the optimizer step, which data-parallel training does not sync: use one device"
        t = experiment.train
        if config.switch == "converged" and (t.val_every is None or (t.lr_decay is None and t.early_stop is None)):
            return ("switch 'converged' ends the autoencoder phase when validation stops improving: set train.val_every "
                    "and train.lr_decay or train.early_stop")
        return None

    @property
    def _converged_mode(self) -> bool:
        return self.config.switch == "converged"

    @property
    def _awaiting_convergence(self) -> bool:
        """In the autoencoder phase of ``switch: converged`` (the recipe decides when it ends)."""
        return self._converged_mode and self.switched_at is None

    def pretrain_steps(self, total_steps: int) -> int:
        """Steps of the autoencoder phase for a run of ``total_steps`` (``switch: converged``: the step it
        ended at, or ``total_steps`` while it goes on)."""
        if self._converged_mode:
            return total_steps if self.switched_at is None else self.switched_at
        return max(1, int(round(self.config.pretrain_fraction * total_steps)))

    def beta(self, schedule: Schedule, step: int, total_steps: int) -> float:
        p = self.pretrain_steps(total_steps)
        if step < p:
            return 0.0
        return float(schedule(step - p, max(1, total_steps - p)))

    def validation_kl_weight(self, step: int) -> float:
        # the autoencoder's plateau is its reconstruction's (switch: fraction keeps the -ELBO throughout,
        # as its recipe never restarts and compares both phases)
        return 0.0 if self._awaiting_convergence else 1.0

    def has_next_phase(self, step: int) -> bool:
        return self._awaiting_convergence

    def next_phase(self, context: TrainingContext, step: int) -> None:
        self._start_vae(context, step)

    def before_step(self, context: TrainingContext, batch: Any, step: int) -> None:
        if self._converged_mode or self.switched_at is not None:
            return
        if step >= self.pretrain_steps(context.cfg.train.max_steps):
            self._start_vae(context, step)

    def _start_vae(self, context: TrainingContext, step: int) -> None:
        self.switched_at = step
        if self.config.reset_decoder:
            from seqvae.composer import reinitialise  # noqa: PLC0415 (the composer imports the registries)

            reinitialise(context.model.decoder, context.cfg)
        if self.config.reset_optimizer:
            for opt in context.optimizers:
                opt.state.clear()

    def state(self) -> dict[str, Any]:
        return {"vae_phase_started_at_step": self.switched_at}

    def state_dict(self) -> dict[str, Any]:
        return {"switched_at": self.switched_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # a run resumed after the switch must not reset the decoder a second time
        self.switched_at = state.get("switched_at")
