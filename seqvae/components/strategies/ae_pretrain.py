"""``ae-pretrain``: autoencoder pretraining, then a fresh decoder (Li et al. 2019, "A Surprisingly Effective Fix").

Phase 1 (``pretrain_steps``) trains with beta = 0: an autoencoder with a stochastic encoder. Then the
decoder's parameters are re-initialised (and the optimizer's state cleared), and phase 2 trains the
VAE, the schedule seeing the phase-2 step ``step - pretrain_steps`` of ``max_steps - pretrain_steps``.
Li et al. pair it with free bits (``--regularizer free-bits`` with ``mode: dimension``, 0.25 nats/dim).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, Schedule, Strategy, TrainingContext

__all__ = ["AEPretrainStrategy"]


class AEPretrainStrategy(Strategy):
    """Autoencoder pretraining then VAE training, in one run of ``train.max_steps`` steps."""

    class Config(ComponentConfig):
        pretrain_fraction: float = Field(
            0.5, gt=0.0, lt=1.0, description="Share of train.max_steps spent as an autoencoder (beta = 0).",
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
        return None

    def pretrain_steps(self, total_steps: int) -> int:
        """Steps of the autoencoder phase for a run of ``total_steps``."""
        return max(1, int(round(self.config.pretrain_fraction * total_steps)))

    def beta(self, schedule: Schedule, step: int, total_steps: int) -> float:
        p = self.pretrain_steps(total_steps)
        if step < p:
            return 0.0
        return float(schedule(step - p, max(1, total_steps - p)))

    def before_step(self, context: TrainingContext, batch: Any, step: int) -> None:
        if self.switched_at is not None or step < self.pretrain_steps(context.cfg.train.max_steps):
            return
        self.switched_at = step
        if self.config.reset_decoder:
            for module in context.model.decoder.modules():
                if module is not context.model.decoder and hasattr(module, "reset_parameters"):
                    module.reset_parameters()
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
