"""``aggressive``: aggressive inference-network training (He et al. 2019, "Lagging inference networks").

While the aggressive phase lasts, every training step first updates the encoder alone, on fresh
training batches, until the per-token loss stops falling; then the step updates everything except
the encoder. The phase ends for good the first time the mutual information I(x;z) on the validation
split falls between two checks (one check per epoch by default; ``patience`` checks in a row with
a lower MI when set above 1). Afterwards training is standard.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Literal

import torch
from pydantic import Field

from seqvae.config import ComponentConfig
from seqvae.interfaces import Batch, BuildContext, Strategy, TrainingContext, kl_weight
from seqvae.optim import adam, clip_gradients, sgd

__all__ = ["AggressiveStrategy"]


class AggressiveStrategy(Strategy):
    """He et al. 2019's loop. Their settings are the defaults (100 inner steps at most, windows of 15).

    The encoder's inner updates use their own optimizer over the encoder's parameters: plain SGD
    with learning rate 1.0 by default, as He et al. (whose encoder and decoder optimizers are both
    SGD 1.0, gradient norm clipped at 5); the step's own update goes through the main optimizer with
    the encoder's gradients dropped while the phase lasts. Inner steps draw
    batches from their own shuffled stream of the training split and do not count as steps (the
    schedule and ``max_steps`` see only the outer steps).
    """

    class Config(ComponentConfig):
        max_inner_steps: int = Field(100, ge=1, description="Encoder-only updates per step, at most.")
        window: int = Field(
            15, ge=1, description="Inner steps per window; the inner loop stops when a window's per-token loss "
            "is not below the previous window's.",
        )
        check_every: int | None = Field(
            None, ge=1, description="Steps between validation-MI checks; None = one epoch of the training split.",
        )
        patience: int = Field(
            1, ge=1, description="Checks in a row with a lower validation MI that end the phase (He et al.: 1).",
        )
        encoder_optimizer: Literal["sgd", "adam"] = Field(
            "sgd", description="Optimizer of the inner encoder updates: plain SGD as in He et al. 2019, or Adam.",
        )
        encoder_lr: float | None = Field(
            None, gt=0, description="Learning rate of the inner updates; None = 1.0 for SGD (He et al.), train.lr for Adam.",
        )

    def __init__(self, config: Config, ctx: BuildContext | None = None):
        super().__init__(config, ctx)
        self.active = True
        self.inner_steps = 0
        self.ended_at: int | None = None
        self.mi_history: list[tuple[int, float]] = []
        self._stream: Iterator[Batch] | None = None
        self._optimizer: torch.optim.Optimizer | None = None
        self._check_every = 1
        self._falls = 0
        self._drawn = 0  # batches taken from the inner stream (its position, for a resume)

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        if not experiment.has_latent:
            return "needs a latent variable (the language-model baseline has none)"
        if experiment.train.world_size > 1:
            return "changes parameters outside the optimizer step, which data-parallel training does not sync: use one device"
        return None

    def on_train_start(self, context: TrainingContext) -> None:
        from seqvae.data.datamodule import BucketedBatches, eval_batches

        corpus, data = context.corpus, context.cfg.data
        train = corpus.split("train")
        self._check_every = self.config.check_every or max(1, -(-len(train) // data.batch_size))
        self._data = BucketedBatches(train, corpus.vocab, data.batch_size, data.bucket_factor, context.cfg.train.seed + 1)
        self._valid = eval_batches(corpus.split("valid"), corpus.vocab, data.eval_batch_size)
        params = context.model.encoder.parameters()
        if self.config.encoder_optimizer == "sgd":
            self._optimizer = sgd(params, self.config.encoder_lr or 1.0)
        else:
            # Adam takes dense gradients only: the encoder's embedding gives up the sparse ones that
            # the main SGD step may have turned on (seqvae.optim.sparse_embedding_gradients)
            for module in context.model.encoder.modules():
                if isinstance(module, torch.nn.Embedding):
                    module.sparse = False
            self._optimizer = adam(params, self.config.encoder_lr or context.cfg.train.lr)
        self.mi_history = [(0, self._validation_mi(context))]

    def _next_batch(self, device: torch.device) -> Batch:
        while True:
            if self._stream is None:
                self._data.next_step = self._drawn
                self._stream = iter(self._data)
            try:
                batch = next(self._stream).to(device)
            except StopIteration:
                self._stream = None
                continue
            self._drawn += 1
            return batch

    def _validation_mi(self, context: TrainingContext) -> float:
        from seqvae.metrics import mutual_information

        return mutual_information(context.model, self._valid, seed=context.cfg.train.seed, device=context.device)

    def record_mi(self, step: int, mi: float) -> None:
        """Record a validation-MI check; end the phase after ``patience`` falls in a row."""
        self._falls = self._falls + 1 if self.mi_history and mi < self.mi_history[-1][1] else 0
        if self._falls >= self.config.patience:
            self.active, self.ended_at = False, step
        self.mi_history.append((step, mi))

    def before_step(self, context: TrainingContext, batch: Batch, step: int) -> None:
        if self.active and step > 0 and step % self._check_every == 0:
            self.record_mi(step, self._validation_mi(context))
        if not self.active:
            return
        model, opt = context.model, self._optimizer
        beta = kl_weight(self, model.schedule, step, context.cfg.train.max_steps)
        clip = context.cfg.train.grad_clip
        previous, loss_sum, tokens = float("inf"), 0.0, 0
        model.zero_grad(set_to_none=True)
        with _only_encoder_trainable(model):
            for inner in range(1, self.config.max_inner_steps + 1):
                fresh = self._next_batch(context.device)
                out = model(fresh, step=step, total_steps=context.cfg.train.max_steps, beta=beta)
                opt.zero_grad(set_to_none=True)
                out.loss.backward()
                if clip:
                    clip_gradients(opt, model.encoder.parameters(), clip)
                opt.step()
                self.inner_steps += 1
                loss_sum += float(out.loss.detach()) * fresh.size
                tokens += int(fresh.lengths.sum())
                if inner % self.config.window == 0:
                    current = loss_sum / tokens
                    if current >= previous:
                        break
                    previous, loss_sum, tokens = current, 0.0, 0
        model.zero_grad(set_to_none=True)

    def before_optimizer_step(self, context: TrainingContext, step: int) -> None:
        if self.active:
            for p in context.model.encoder.parameters():
                p.grad = None

    def state_dict(self) -> dict[str, Any]:
        return {
            "active": self.active, "inner_steps": self.inner_steps, "ended_at": self.ended_at,
            "mi_history": [list(x) for x in self.mi_history], "falls": self._falls, "drawn": self._drawn,
            "optimizer": self._optimizer.state_dict() if self._optimizer is not None else None,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.active, self.inner_steps, self.ended_at = state["active"], state["inner_steps"], state["ended_at"]
        self.mi_history = [(int(s), float(m)) for s, m in state["mi_history"]]
        self._falls, self._drawn, self._stream = state["falls"], state["drawn"], None
        if self._optimizer is not None and state["optimizer"] is not None:
            self._optimizer.load_state_dict(state["optimizer"])

    def state(self) -> dict[str, Any]:
        return {
            "aggressive_ended_at_step": self.ended_at,
            "inner_steps": self.inner_steps,
            "validation_mi": [{"step": s, "mi": round(m, 4)} for s, m in self.mi_history],
        }


@contextmanager
def _only_encoder_trainable(model: torch.nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of every parameter outside the encoder for the inner updates.

    Only the encoder's gradients are used there; the gradient still flows through the decoder's
    activations to ``z``, but autograd skips the decoder's weight gradients (the vocabulary layer's
    weight product, the embedding gradient): an inner step of the PTB model takes 10-16 % less
    time (``benchmarks/speed/aggressive_inner.py``), with a bit-identical encoder update.
    Parameters shared with the encoder stay trainable; every flag is restored on exit.
    """
    encoder = {id(p) for p in model.encoder.parameters()}
    frozen = [p for p in model.parameters() if p.requires_grad and id(p) not in encoder]
    for p in frozen:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in frozen:
            p.requires_grad_(True)
