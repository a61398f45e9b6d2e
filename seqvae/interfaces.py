"""The component interfaces and the data types that flow between them.

Shapes use einops letters: ``b`` batch, ``t`` time, ``v`` vocabulary, ``d`` latent, ``k`` samples.

Every component is built as ``Component(config, ctx)``: ``config`` is the component's own nested
pydantic ``Config`` (extra fields forbidden) and ``ctx`` a ``BuildContext`` carrying the sizes
that components share.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import torch
from torch import Tensor, nn

from seqvae.config import ComponentConfig, ExperimentConfig
from seqvae.data.batch import Batch  # re-exported: components and plugins take it from here

from seqvae.data.corpus import Corpus

if TYPE_CHECKING:
    from pathlib import Path

__all__ = [
    "Batch",
    "BuildContext",
    "Component",
    "ComponentError",
    "DatasetBuilder",
    "Decoder",
    "DiagonalGaussian",
    "Encoder",
    "KL",
    "Posterior",
    "Prior",
    "Regularizer",
    "Schedule",
    "Strategy",
    "TrainingContext",
    "VAEOutput",
    "kl_weight",
]

_LOG_2PI = math.log(2 * math.pi)


@dataclass(frozen=True)
class BuildContext:
    """Sizes and special ids shared by all components of one model."""

    vocab_size: int
    pad_id: int
    bos_id: int
    eos_id: int
    unk_id: int
    latent_dim: int
    embed_dim: int
    hidden_size: int


class Posterior(ABC):
    """A batch of posteriors q(z|x), one per sentence: what the metrics and the model need of it.

    ``mean: b d`` is the location (for a Gaussian its mean; for a von Mises-Fisher its mean direction):
    AU is computed from it and decoding "from the mean" uses it.
    """

    mean: Tensor

    @abstractmethod
    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample: ``b d`` (``k`` None) or ``k b d``."""

    @abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x): ``... b d -> ... b`` (sentence j's density at ``z[..., j, :]``)."""

    @abstractmethod
    def entropy(self) -> Tensor:
        """Entropy per sentence: ``b``."""

    @abstractmethod
    def pairwise_log_prob(self, z: Tensor) -> Tensor:
        """``z: i d -> i j``: log q(z_i | x_j) for every sample i and sentence j (the MI mixture)."""

    @abstractmethod
    def select(self, idx: Tensor) -> Posterior:
        """The posteriors of the sentences ``idx`` (a ``b' `` index tensor)."""


@dataclass
class DiagonalGaussian(Posterior):
    """A diagonal Gaussian posterior q(z|x) with ``mean, logvar: b d``."""

    mean: Tensor
    logvar: Tensor

    @property
    def std(self) -> Tensor:
        return torch.exp(0.5 * self.logvar)

    def rsample(self, k: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Reparameterised sample: ``b d`` (``k`` None) or ``k b d``."""
        shape = self.mean.shape if k is None else (k, *self.mean.shape)
        eps = torch.randn(shape, generator=generator, device=self.mean.device, dtype=self.mean.dtype)
        return self.mean + eps * self.std

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) summed over ``d``: ``... b d -> ... b``."""
        return (-0.5 * (_LOG_2PI + self.logvar + (z - self.mean) ** 2 / self.logvar.exp())).sum(-1)

    def entropy(self) -> Tensor:
        """Entropy per sentence: ``b``."""
        return 0.5 * (self.mean.shape[-1] * (1 + _LOG_2PI) + self.logvar.sum(-1))

    def pairwise_log_prob(self, z: Tensor) -> Tensor:
        """``z: i d -> i j``: log q(z_i | x_j)."""
        mix = DiagonalGaussian(self.mean[None], self.logvar[None])  # 1 j d
        return mix.log_prob(z[:, None, :])  # i j

    def select(self, idx: Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.mean[idx], self.logvar[idx])


class KL(NamedTuple):
    """KL(q(z|x) || p(z)) per dimension ``b d``, and whether it is analytic (else Monte Carlo)."""

    per_dim: Tensor
    analytic: bool


@dataclass
class VAEOutput:
    """What one forward pass of [`SequenceVAE`][seqvae.model.SequenceVAE] returns.

    ``rec`` and ``kl`` are per sentence (``b``); ``kl`` is the raw KL (regularizers such as free bits
    change only ``loss``). ``terms`` holds every scalar that entered ``loss``. ``logits`` (``b t v``)
    is None when the decoder exposes an ``output_layer``: the vocabulary layer and the loss then run
    fused ([`linear_cross_entropy`][seqvae.fused_ce.linear_cross_entropy]) and the full logits are never made.
    """

    loss: Tensor
    rec: Tensor
    kl: Tensor
    kl_per_dim: Tensor
    beta: float
    logits: Tensor | None
    z: Tensor
    posterior: Posterior
    terms: dict[str, Tensor] = field(default_factory=dict)


class ComponentError(RuntimeError):
    """A component broke its contract at run time (a wrong shape, a non-scalar loss, a negative beta).

    The message names the component, its package and what it returned against what was wanted.
    """


def component_label(kind: str, component: Any) -> str:
    """``decoder 'lstm' (seqvae==0.1.0)``: how errors name a built component and where it comes from."""
    name = getattr(getattr(component, "config", None), "kind", type(component).__name__)
    try:
        from seqvae.registry import get_registry

        source = get_registry(kind).provenance(name)
    except Exception:  # registered in-process, or not through the registry at all
        source = type(component).__module__
    return f"{kind} '{name}' ({source})"


class Component:
    """What every component kind shares (the bases below all derive from it).

    A component is built as ``Component(config, ctx)`` and keeps both: ``self.config`` is its own
    validated ``Config`` (a subclass of [`ComponentConfig`][seqvae.config.ComponentConfig], extra
    fields forbidden; the registry refuses a class without one) and ``self.ctx`` the shared
    [`BuildContext`][seqvae.interfaces.BuildContext] (vocabulary size, special ids, latent,
    embedding and default hidden sizes).
    """

    Config: ClassVar[type[ComponentConfig]]
    """The component's pydantic config model; ``kind`` is its registry name."""

    @classmethod
    def compatibility(cls, config: ComponentConfig, experiment: Any) -> str | None:
        """Why this component cannot run in ``experiment``, or None.

        ``experiment`` is the whole [`ExperimentConfig`][seqvae.config.ExperimentConfig] being
        validated: its sections (``experiment.train.world_size``, ``experiment.model.latent_dim``),
        ``experiment.has_latent``, ``experiment.component_class(slot)`` (the class in another slot)
        and ``experiment.components()`` (every component's path, kind and config). Checked when a
        config is validated, so a bad combination is a config error (exit 2) before any training.
        seqvae prefixes the reason with the component's place and name, e.g.
        ``regularizers.0 (free-bits): <reason>``; write the reason alone.
        """
        return None


_Component = Component  # the name before it was public


class Encoder(nn.Module, Component, ABC):
    """q(z|x): ``forward(tokens: b t, lengths: b) -> Posterior``, normally a ``DiagonalGaussian``.

    Padding must not change the result: a sentence encodes the same alone or in a padded batch.
    An encoder that can read embeddings directly (the VampPrior's pseudo-inputs) also implements
    ``forward_embeddings``.
    """

    has_latent: ClassVar[bool] = True
    """False for the ``none`` encoder of the language-model baseline: the model then has no latent
    (the composer builds every component with ``latent_dim = 0``)."""

    def __init__(self, config: ComponentConfig, ctx: BuildContext):
        super().__init__()
        self.config, self.ctx = config, ctx

    @abstractmethod
    def forward(self, tokens: Tensor, lengths: Tensor) -> Posterior:
        """q(z|x) of ``tokens: b t`` (``w_1 .. w_n <eos>`` then padding; ``lengths: b``): ``mean: b d``."""

    def forward_embeddings(self, embeddings: Tensor, lengths: Tensor) -> Posterior:
        """Encode ``embeddings: b t e`` (``e = ctx.embed_dim``) instead of token ids. Optional."""
        raise NotImplementedError(f"encoder {type(self).__name__} cannot read embeddings")

    @classmethod
    def reads_embeddings(cls) -> bool:
        """Whether ``forward_embeddings`` is implemented."""
        return cls.forward_embeddings is not Encoder.forward_embeddings


class Decoder(nn.Module, Component, ABC):
    """p(x|z), autoregressive and causal.

    ``forward(inputs: b t, z: b d, lengths: b) -> logits: b t v`` (teacher forcing; the logits at
    position t never depend on inputs after t). ``init_state(z)`` and ``step(token: b, state)`` give
    the same logits one position at a time, for generation.
    """

    def __init__(self, config: ComponentConfig, ctx: BuildContext):
        super().__init__()
        self.config, self.ctx = config, ctx

    @abstractmethod
    def forward(self, inputs: Tensor, z: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forced logits ``b t v`` for ``inputs: b t`` (``<bos> w_1 .. w_n``), ``z: b d``, ``lengths: b``."""

    @abstractmethod
    def init_state(self, z: Tensor) -> Any:
        """The decoding state before the first token, for ``z: b d`` (any nested dict/list/tuple of tensors)."""

    @abstractmethod
    def step(self, token: Tensor, state: Any) -> tuple[Tensor, Any]:
        """Feed ``token: b`` and return the next logits ``b v`` and the new state (equal to ``forward``'s)."""

    def reorder_state(self, state: Any, index: Tensor) -> Any:
        """The state of rows ``index`` (beam search keeps the best hypotheses this way).

        Default: every tensor in the (nested dict/list/tuple) state is indexed along dim 0, the
        batch. A decoder whose state has the batch elsewhere (an RNN's ``l b h``) overrides this.
        """
        if isinstance(state, Tensor):
            return state.index_select(0, index)
        if isinstance(state, dict):
            return {k: self.reorder_state(v, index) for k, v in state.items()}
        if isinstance(state, (list, tuple)):
            return type(state)(self.reorder_state(v, index) for v in state)
        return state

    def output_layer(self) -> nn.Linear | None:
        """The final ``Linear`` from features to logits, when the decoder ends in one; default None.

        When given, training and evaluation compute the vocabulary layer and the cross-entropy as
        one fused, blocked operation on the real positions from ``forward_features`` (faster,
        and no ``b t v`` tensor). Optional: a decoder without it is trained and evaluated from
        ``forward``'s logits.
        """
        return None

    def forward_features(self, inputs: Tensor, z: Tensor, lengths: Tensor) -> Tensor:
        """The features ``b t h`` that ``output_layer`` maps to ``forward``'s logits (when it is not None)."""
        raise NotImplementedError(f"{type(self).__name__} has no output_layer()")


class Prior(nn.Module, Component, ABC):
    """p(z): ``log_prob(z: ... d) -> ...``, ``sample(n) -> n d``, ``kl(posterior) -> KL``.

    The prior also picks the latent family: ``adapt_posterior`` turns what the encoder returns
    into the posterior this prior works with (identity for Gaussian priors; the ``vmf`` prior makes a
    von Mises-Fisher posterior from the Gaussian's mean direction).
    """

    has_latent: ClassVar[bool] = True
    """False for the ``none`` prior of the language-model baseline (it pairs with encoder ``none``)."""
    factorized: ClassVar[bool] = True
    """True when the KL splits over latent dimensions (a factorised prior and posterior). When False,
    ``kl().per_dim`` is the sentence KL shared evenly over d, and per-dimension free bits refuse it."""

    def __init__(self, config: ComponentConfig, ctx: BuildContext):
        super().__init__()
        self.config, self.ctx = config, ctx

    @abstractmethod
    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z): ``... d -> ...``."""

    @abstractmethod
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws from p(z): ``n d``."""

    def adapt_posterior(self, posterior: Posterior) -> Posterior:
        """The posterior family of this prior, from the encoder's output. Default: unchanged."""
        return posterior

    def bind(self, encoder: Encoder) -> None:
        """Called once by the model with its encoder (the VampPrior encodes pseudo-inputs). Default: nothing."""

    def kl(self, posterior: Posterior, generator: torch.Generator | None = None) -> KL:
        """KL(q || p) per dimension. Default: a one-sample Monte Carlo estimate spread evenly over d."""
        z = posterior.rsample(generator=generator)
        per_sentence = posterior.log_prob(z) - self.log_prob(z)
        d = z.shape[-1]
        return KL(per_sentence[:, None].expand(-1, d) / d, analytic=False)


class Regularizer(nn.Module, Component):
    """Optional hooks with do-nothing defaults; several regularizers compose in list order.

    Every hook gets ``step``, the run's optimizer step counted from 0, and may read
    ``self.total_steps``, the run's length (``train.max_steps``), which the model sets before it
    calls the hooks: together they are what the schedule gets, so a regularizer can follow the
    run's progress (``step / self.total_steps``) without a duplicated length in its config. Under
    the ``ae-pretrain`` strategy ``step`` still counts from the run's start, pretraining included
    (the schedule alone sees the VAE phase's own step). In evaluation ``step`` is 0.
    """

    total_steps: int = 1
    """The run's length in optimizer steps (``train.max_steps``); set by the model before the hooks run."""

    def __init__(self, config: ComponentConfig, ctx: BuildContext):
        super().__init__()
        self.config, self.ctx = config, ctx

    def corrupt_inputs(
        self, inputs: Tensor, lengths: Tensor, step: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """Change decoder inputs ``b t`` during training (e.g. word dropout). Default: unchanged."""
        return inputs

    def transform_posterior(self, posterior: Posterior, step: int) -> Posterior:
        """Change the encoder's posterior, in training and evaluation (e.g. BN-VAE). Default: unchanged."""
        return posterior

    def transform_kl(self, kl_per_dim: Tensor, step: int) -> Tensor:
        """Change the KL ``b d`` that enters the loss (e.g. free bits). Default: unchanged."""
        return kl_per_dim

    def extra_loss(self, out: VAEOutput, batch: Batch, step: int) -> dict[str, Tensor]:
        """Extra losses added to the objective, each a scalar tensor (shape ``()``), e.g. bag-of-words. Default: none."""
        return {}


class Schedule(Component, ABC):
    """The KL weight as a pure function of the step: ``__call__(step, total_steps) -> beta``.

    beta is a finite float in ``[0, max_beta]``; a schedule that means to go above 1 (a beta-VAE's
    weight) declares it with a larger ``max_beta``. The conformance kit checks both.
    """

    max_beta: ClassVar[float] = 1.0
    """The largest beta this schedule returns under its default config (the kit checks it)."""

    def __init__(self, config: ComponentConfig, ctx: BuildContext | None = None):
        self.config, self.ctx = config, ctx

    @abstractmethod
    def __call__(self, step: int, total_steps: int) -> float:
        """beta at optimizer step ``step`` (from 0) of a run of ``total_steps``: a float in ``[0, max_beta]``."""


class DatasetBuilder(Component, ABC):
    """A corpus source: ``load(cache_dir) -> Corpus`` (vocabulary plus tokenised splits)."""

    def __init__(self, config: ComponentConfig, ctx: BuildContext | None = None):
        self.config, self.ctx = config, ctx

    @abstractmethod
    def load(self, cache_dir: Path) -> Corpus:
        """Read (or generate, caching under ``cache_dir``) the corpus: vocabulary and tokenised splits."""


@dataclass
class TrainingContext:
    """What a training strategy may use of the run it drives (``VAESystem`` builds it when training starts).

    Strategies get this instead of the Lightning module, so their reach into the loop is written
    down: the model, the config, the corpus the run trains on, the loop's optimizers (Lightning's
    own list: clearing a state there clears the optimizer's) and the device.
    """

    model: Any
    """The [`SequenceVAE`][seqvae.model.SequenceVAE] being trained."""
    cfg: ExperimentConfig
    """The run's config (``cfg.train.max_steps``, ``cfg.data.batch_size``, ``cfg.train.seed``, ...)."""
    corpus: Corpus
    """The corpus the run trains on (its ``train`` and ``valid`` splits and its vocabulary)."""
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    """The training loop's optimizers."""
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    """Where the model is."""


class Strategy(Component):
    """How the training loop drives the model (registry kind ``strategy``); do-nothing defaults.

    ``VAESystem`` calls ``on_train_start`` once, ``beta`` and ``before_step`` on every
    optimizer step (``step`` counts optimizer steps from 0) and ``before_optimizer_step`` after
    the backward pass; the validation recipe asks ``validation_kl_weight`` at each validation and
    ``has_next_phase`` / ``next_phase`` where it would stop. The standard loop is the ``standard``
    strategy; aggressive encoder training and autoencoder pretraining are others.
    """

    def __init__(self, config: ComponentConfig, ctx: BuildContext | None = None):
        self.config, self.ctx = config, ctx

    def on_train_start(self, context: TrainingContext) -> None:
        """Set-up that needs the run (data, optimizers). Default: nothing."""

    def beta(self, schedule: Schedule, step: int, total_steps: int) -> float:
        """The KL weight at ``step``. Default: the schedule's.

        The strategy is the one place that decides the KL weight of a training step: the loop asks
        [`kl_weight`][seqvae.interfaces.kl_weight], which calls this, and passes the number to the model.
        """
        return float(schedule(step, total_steps))

    def before_step(self, context: TrainingContext, batch: Batch, step: int) -> None:
        """Runs before the loss of ``step`` is computed (e.g. inner encoder updates). Default: nothing."""

    def before_optimizer_step(self, context: TrainingContext, step: int) -> None:
        """Runs after backward, before the optimizer step (e.g. freeze a part). Default: nothing."""

    def validation_kl_weight(self, step: int) -> float:
        """The weight of the KL in the validation objective that the training recipes watch at ``step``.

        The recipes ([`ValidationRecipe`][seqvae.training.recipes.ValidationRecipe]: plateau decay,
        early stopping, the best weights) compare ``rec + w * KL`` on the validation split. Default
        ``w = 1``: the -ELBO. An autoencoder phase returns 0, so that its plateau is judged on the
        reconstruction alone, as He et al.'s and Li et al.'s code judge their ``beta = 0`` runs.
        """
        return 1.0

    def has_next_phase(self, step: int) -> bool:
        """Whether training goes on with another phase where the recipe would end it at ``step``.

        Asked when the learning rate has decayed ``train.lr_decay.max_decays`` times or
        ``train.early_stop`` validations passed without a new best. Default: False (the run stops).
        """
        return False

    def next_phase(self, context: TrainingContext, step: int) -> None:
        """Start the next phase (after ``has_next_phase`` said there is one).

        When the recipe keeps best weights, the model holds the best ones of the phase that ended.
        Afterwards the recipe starts over: the configured learning rate, no best yet, no decays, and
        ``lr_decay.start_step`` counted from ``step``. Default: nothing.
        """

    def state(self) -> dict[str, Any]:
        """What the strategy did, recorded in ``result.json`` (e.g. when a phase ended). Default: empty."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed run needs to continue exactly (tensors and plain types only).

        Saved in the resumable checkpoint; ``load_state_dict`` gets it back after
        ``on_train_start`` of the resumed run. Default: empty (a stateless strategy).
        """
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned. Default: nothing."""


def kl_weight(strategy: Strategy, schedule: Schedule, step: int, total_steps: int) -> float:
    """The KL weight (beta) of training step ``step``: ``strategy.beta(schedule, step, total_steps)``, checked.

    Raises:
        ComponentError: beta is negative or not finite; the message names the schedule (and the
            strategy, when it is not the standard one that passes the schedule's value on).
    """
    beta = float(strategy.beta(schedule, step, total_steps))
    if not (0.0 <= beta < math.inf):  # every step: a float comparison
        kind = getattr(getattr(strategy, "config", None), "kind", None)
        via = "" if kind in (None, "standard") else f" through {component_label('strategy', strategy)}"
        raise ComponentError(f"{component_label('schedule', schedule)}{via} gave beta {beta} at step {step} of "
                             f"{total_steps}; want a finite number >= 0")
    return beta
