"""Validated experiment configuration (pydantic v2). Importing this module does not import torch.

A config names components by their registry name, never by an import path. A component slot
accepts either a bare name (``"lstm"``) or a mapping (``{"kind": "lstm", "num_layers": 2}``); the
mapping is validated by that component's own nested ``Config`` model, so every error carries its
full path (``decoder.num_layers``) and all errors are reported in one pass.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from seqvae.component_config import ComponentConfig
from seqvae.registry import RegistryError, get_registry

__all__ = [
    "SLOTS",
    "ComponentConfig",
    "ConfigError",
    "DataConfig",
    "EvalConfig",
    "ExperimentConfig",
    "LRDecayConfig",
    "ModelConfig",
    "TrainConfig",
    "apply_overrides",
    "deep_merge",
    "format_validation_error",
    "load_config_file",
    "validate_experiment",
]


#: Where each component sits in an ``ExperimentConfig`` -> its registry kind. The one table of
#: slots: the config's checks, provenance, the JSON Schema and the catalogue all read it.
SLOTS: dict[str, str] = {"encoder": "encoder", "decoder": "decoder", "prior": "prior", "schedule": "schedule",
                         "regularizers": "regularizer", "strategy": "strategy", "data.dataset": "dataset"}


class ConfigError(ValueError):
    """A configuration could not be read or validated. The message lists every problem."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


def _component(kind: str, default: str | None):
    """A ``BeforeValidator`` that turns a name or mapping into the component's own Config.

    A mapping without ``kind`` means the slot's default component (``default``).
    """

    def validate(value: Any) -> Any:
        if isinstance(value, ComponentConfig):
            return value
        if isinstance(value, str):
            value = {"kind": value}
        if not isinstance(value, dict):
            raise PydanticCustomError(
                "component_spec", "expected a {kind} name or a mapping with a 'kind' key", {"kind": kind}
            )
        if "kind" not in value and default is not None:
            value = {**value, "kind": default}
        if "kind" not in value or not isinstance(value["kind"], str):
            raise PydanticCustomError("component_spec", "missing the string field 'kind'", {})
        try:
            cls = get_registry(kind).get(value["kind"])
        except RegistryError as exc:
            raise PydanticCustomError("unknown_component", "{msg}", {"msg": str(exc)}) from None
        return cls.Config.model_validate(value)

    return BeforeValidator(validate)


def _ref(kind: str, default: str | None = None) -> Any:
    return Annotated[SerializeAsAny[ComponentConfig], _component(kind, default)]


EncoderRef = _ref("encoder", "lstm")
DecoderRef = _ref("decoder", "lstm")
PriorRef = _ref("prior", "gaussian")
RegularizerRef = _ref("regularizer")
ScheduleRef = _ref("schedule", "constant")
DatasetRef = _ref("dataset", "synthetic")
StrategyRef = _ref("strategy", "standard")


class ModelConfig(_Strict):
    """Sizes shared by every component (passed to components through the build context)."""

    latent_dim: int = Field(32, ge=1, le=4096, description="Size d of the latent z.")
    embed_dim: int = Field(256, ge=1, le=8192, description="Token embedding size.")
    hidden_size: int = Field(
        256, ge=1, le=16384, description="Default hidden size of encoders/decoders that have one."
    )
    init: Literal["default", "uniform"] = Field(
        "default",
        description="Encoder and decoder weights: each layer's PyTorch default, or 'uniform' as He et al. 2019 "
        "and Li et al. 2019 (weights U(-init_range, init_range), embeddings U(-embed_init_range, embed_init_range)).",
    )
    init_range: float = Field(0.01, gt=0, description="Half-width of the uniform init of weights (init: uniform).")
    embed_init_range: float = Field(
        0.1, gt=0, description="Half-width of the uniform init of embeddings (init: uniform)."
    )


class DataConfig(_Strict):
    """Which corpus, and how it is batched."""

    dataset: DatasetRef = Field("synthetic", description="Dataset name or mapping (registry 'dataset').")
    batch_size: int = Field(32, ge=1, description="Training sentences per batch.")
    eval_batch_size: int = Field(128, ge=1, description="Sentences per batch when evaluating.")
    bucket_factor: int = Field(
        50, ge=1, description="Sentences are sorted by length within pools of batch_size*bucket_factor."
    )


class LRDecayConfig(_Strict):
    """Learning-rate decay on a validation plateau (Li et al. 2019, He et al. 2019, texar's PTB recipe).

    After ``patience`` validations in a row without a new best validation -ELBO (from ``start_step``
    on), the learning rate is multiplied by ``factor``; with ``restore_best`` the weights of the best
    validation so far are loaded back and the optimizer's state is reset (He et al. reload the best
    model and build a new optimizer at each decay), or, with ``optimizer_state: best``, restored to
    the state saved with those weights (for Adam, whose fresh moments make large first steps; the
    measurement is in the configuration guide). Training stops once ``max_decays`` decays have been made.
    """

    factor: float = Field(0.5, gt=0, lt=1, description="Multiply the learning rate by this at each decay.")
    patience: int = Field(2, ge=1, description="Validations without a new best before a decay.")
    max_decays: int = Field(5, ge=1, description="Stop training after this many decays.")
    start_step: int = Field(0, ge=0, description="No decay before this step (He et al.: epoch 15).")
    restore_best: bool = Field(True, description="Load the best weights back at a decay.")
    optimizer_state: Literal["reset", "best"] = Field(
        "reset",
        description="With restore_best: a fresh optimizer state (He et al., whose SGD has none), or the state "
        "saved with the best weights ('best'; for Adam, whose fresh moments make large first steps).",
    )


class TrainConfig(_Strict):
    """Optimisation and the Lightning trainer."""

    max_steps: int = Field(2000, ge=1, description="Optimizer steps (schedules see this as total_steps).")
    optimizer: Literal["adam", "sgd"] = Field(
        "adam", description="Adam, or plain SGD without momentum (He et al. 2019, Li et al. 2019 and BN-VAE use SGD, lr 1.0 or 0.5; "
        "on one device its embeddings get sparse gradients: only the rows a batch holds are updated, the same step, faster).",
    )
    lr: float = Field(1e-3, gt=0, description="Learning rate of the optimizer.")
    grad_clip: float = Field(5.0, ge=0, description="Gradient-norm clip (0 = off).")
    seed: int = Field(0, ge=0, description="Seed for Lightning, the data order and evaluation.")
    precision: Literal["32-true", "bf16-mixed"] = Field("32-true", description="Lightning precision.")
    accelerator: Literal["cpu", "gpu", "auto"] = Field("cpu", description="Lightning accelerator (auto = CUDA when present).")
    devices: int = Field(1, ge=1, description="Devices (processes) per node; the global batch is split between them.")
    num_nodes: int = Field(1, ge=1, description="Nodes (Lightning multi-node: torchrun or SLURM launch the processes).")
    distributed: Literal["auto", "ddp", "ddp_spawn", "ddp_fork"] = Field(
        "auto", description="Lightning strategy for several devices (the --distributed flag; DDP by default).",
    )
    log_every: int = Field(
        50, ge=1, description="Log the mean training terms every N steps (a run under 10 N steps logs every max_steps // 10).",
    )
    val_every: int | None = Field(
        None, ge=1, description="Validate (-ELBO on the valid split) every N steps; None = at the end."
    )
    checkpoint_every: int | None = Field(
        500, ge=1, description="Write the resumable training state (resume.ckpt) every N steps; None = never."
    )
    deterministic: bool = Field(
        True, description="Deterministic algorithms (same config + seed = same numbers on one machine)."
    )
    lr_decay: LRDecayConfig | None = Field(
        None, description="Learning-rate decay on a validation plateau (needs val_every); None = constant lr."
    )
    early_stop: int | None = Field(
        None, ge=1, description="Stop after this many validations in a row without a new best (needs val_every).",
    )
    lr_cosine_period: int | None = Field(
        None, ge=1, description="Cosine learning-rate restarts every this many steps (Fu et al. 2019's PTB recipe: "
        "one per 10-epoch cycle): step t trains at lr * (1 + cos(pi * (t mod period) / period)) / 2. None = off; "
        "not with lr_decay.",
    )
    loggers: list[Literal["tensorboard", "wandb", "mlflow"]] = Field(
        default_factory=list,
        description="Lightning loggers besides the CSV log (logs/metrics.csv, always written): tensorboard "
        "(logs/tensorboard), wandb (offline unless WANDB_MODE says otherwise), mlflow (./mlruns in the run folder).",
    )
    keep: Literal["last", "best"] = Field(
        "last",
        description="Weights saved as checkpoint.pt: the last step's, or those of the best validation -ELBO "
        "(the final validation included). resume.ckpt always holds the last step's state.",
    )

    @model_validator(mode="after")
    def _loggers_installed(self) -> TrainConfig:
        import importlib.util

        needs = {"tensorboard": ("tensorboard", "tensorboardX"), "wandb": ("wandb",), "mlflow": ("mlflow",)}
        for name in self.loggers:
            if not any(importlib.util.find_spec(pkg) for pkg in needs[name]):
                hint = "seqvae[tensorboard]" if name == "tensorboard" else needs[name][0]
                raise ValueError(f"loggers: the {name} logger needs the {needs[name][-1]} package "
                                 f"(pip install {hint})")
        if len(set(self.loggers)) != len(self.loggers):
            raise ValueError(f"loggers: each logger once (got {self.loggers})")
        return self

    @model_validator(mode="after")
    def _one_lr_schedule(self) -> TrainConfig:
        if self.lr_cosine_period is not None and self.lr_decay is not None:
            raise ValueError("lr_cosine_period and lr_decay both set the learning rate: choose one")
        return self

    @model_validator(mode="after")
    def _recipe_needs_validation(self) -> TrainConfig:
        wanted = [name for name, on in (("lr_decay", self.lr_decay is not None), ("early_stop", self.early_stop),
                                        ("keep: best", self.keep == "best")) if on]
        if wanted and self.val_every is None:
            verb = "needs" if len(wanted) == 1 else "need"
            raise ValueError(f"{', '.join(wanted)} {verb} validation during training: set train.val_every")
        return self


    @property
    def log_interval(self) -> int:
        """Steps between logged training rows: ``log_every``, or less in a short run, so that every run's
        ``metrics.csv`` holds a curve of at least 10 points (a 40-step run logs every 4 steps)."""
        return max(1, min(self.log_every, self.max_steps // 10))

    @property
    def world_size(self) -> int:
        """Processes that train together: ``devices * num_nodes``."""
        return self.devices * self.num_nodes


class EvalConfig(_Strict):
    """Evaluation of a finished run."""

    split: Literal["valid", "test"] = Field("test", description="Split the reported metrics use.")
    au_threshold: float = Field(0.01, gt=0, description="AU counts dims with Var_x(E_q[z_d]) >= this.")
    iw_samples: int = Field(
        500, ge=0, description="K importance samples for IW-NLL (0 = skip IW-NLL and ppl_iw)."
    )
    collapse_kl: float = Field(
        0.1, ge=0, description="A run is collapsed when AU == 0 or KL (nats/sentence) < this."
    )
    precision: Literal["32-true", "bf16-mixed"] = Field(
        "32-true",
        description="Precision of the evaluation after training: bf16-mixed runs the matrix products in bf16 "
        "(float32 reductions), about 2x faster for IW-NLL on CPUs with AMX.",
    )


class ExperimentConfig(_Strict):
    """One training run: the components, the sizes, the data, training and evaluation."""

    encoder: EncoderRef = Field("lstm", description="Encoder q(z|x).")
    decoder: DecoderRef = Field("lstm", description="Decoder p(x|z).")
    prior: PriorRef = Field("gaussian", description="Prior p(z).")
    schedule: ScheduleRef = Field("constant", description="KL weight schedule beta(step).")
    regularizers: list[RegularizerRef] = Field(
        default_factory=list, description="Regularizers, applied in order."
    )
    strategy: StrategyRef = Field("standard", description="Training strategy (how the loop drives the model).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _latent_pairing(self) -> ExperimentConfig:
        if self.has_latent != getattr(get_registry("prior").get(self.prior.kind), "has_latent", True):
            raise ValueError(
                f"encoder '{self.encoder.kind}' and prior '{self.prior.kind}' do not match: the "
                "language-model baseline needs both 'none', a VAE needs neither"
            )
        problems = []
        for label, kind, spec in self.components():
            if kind == "dataset":
                continue
            why = get_registry(kind).get(spec.kind).compatibility(spec, self)
            if why:
                problems.append(f"{label} ({spec.kind}): {why}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def components(self) -> list[tuple[str, str, ComponentConfig]]:
        """(path, registry kind, config) of every component, in ``SLOTS`` order.

        The path is where the component sits in the config: ``decoder``, ``regularizers.0``, ``data.dataset``.
        """
        out = []
        for slot, kind in SLOTS.items():
            value: Any = self
            for part in slot.split("."):
                value = getattr(value, part)
            if isinstance(value, (list, tuple)):
                out += [(f"{slot}.{i}", kind, spec) for i, spec in enumerate(value)]
            else:
                out.append((slot, kind, value))
        return out

    def component_class(self, slot: str) -> type:
        """The registered class in ``slot`` (encoder, decoder, prior, schedule or strategy)."""
        return get_registry(slot).get(getattr(self, slot).kind)

    @property
    def has_latent(self) -> bool:
        """False for the language-model baseline (encoder and prior ``none``)."""
        return getattr(get_registry("encoder").get(self.encoder.kind), "has_latent", True)

    def component_names(self) -> dict[str, Any]:
        """Names of the components in this config, by slot."""
        return {
            "encoder": self.encoder.kind,
            "decoder": self.decoder.kind,
            "prior": self.prior.kind,
            "schedule": self.schedule.kind,
            "regularizers": [r.kind for r in self.regularizers],
            "strategy": self.strategy.kind,
            "dataset": self.data.dataset.kind,
        }


# ---------------------------------------------------------------------------------------- I/O


def format_validation_error(err: ValidationError, source: str = "config") -> str:
    """``source: path: problem (got value)`` for one error; a header and a line per error for several."""
    lines = [f"Invalid {source}: {err.error_count()} error(s)"]
    for e in err.errors(include_url=False):
        path = ".".join(str(p) for p in e["loc"]) or "(top level)"
        got = ""
        # a check of the whole config (loc empty) names its fields itself: its input is the whole config
        if e["type"] not in ("missing", "extra_forbidden", "unknown_component") and "input" in e and e["loc"]:
            got = f" (got {e['input']!r})"
        elif e["type"] == "extra_forbidden":
            got = " (unknown field)"
        lines.append(f"  {path}: {e['msg']}{got}")
    if len(lines) == 2:
        return f"Invalid {source}: {lines[1].strip()}"
    return "\n".join(lines)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a YAML or JSON config file into a dict (YAML with ``safe_load`` only).

    Raises:
        ConfigError: missing file, malformed YAML/JSON (with its line), or not a mapping.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    try:
        if path.suffix == ".json":
            data = json.loads(text) if text.strip() else {}
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``top`` laid over it: nested dicts merge key by key, anything else in ``top`` replaces.

    A config file over a suite (``seqvae bench --suite ptb --config my.yaml``) and a benchmark row with
    its own training settings (``{"train": {"lr": 0.5}}`` keeps the rest of the suite's ``train``)
    combine this way. Neither argument is changed.
    """
    merged = dict(base)
    for k, v in top.items():
        merged[k] = deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``a.b=value`` overrides (values parsed as YAML scalars) to a raw config dict.

    A component slot given as a bare name is expanded to ``{"kind": name}`` first, so
    ``decoder.num_layers=2`` works on ``decoder: lstm``. List items are addressed by index.

    Raises:
        ConfigError: an override without ``=`` or with an empty path.
    """
    out = json.loads(json.dumps(raw))  # deep copy of plain data
    for item in overrides:
        key, sep, value_text = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. decoder.num_layers=2")
        try:
            value = yaml.safe_load(value_text) if value_text.strip() else ""
        except yaml.YAMLError:
            value = value_text
        parts = key.strip().split(".")
        node: Any = out
        for i, part in enumerate(parts[:-1]):
            nxt = _child(node, part, item)
            if isinstance(nxt, str):  # bare component name -> mapping
                nxt = {"kind": nxt}
                _set(node, part, nxt, item)
            elif nxt is None:
                nxt = {}
                _set(node, part, nxt, item)
            node = nxt
        _set(node, parts[-1], value, item)
    return out


def _child(node: Any, part: str, item: str) -> Any:
    if isinstance(node, list):
        try:
            return node[int(part)]
        except (ValueError, IndexError):
            raise ConfigError(f"--set {item!r}: '{part}' is not an index of a {len(node)}-item list") from None
    if isinstance(node, dict):
        return node.get(part)
    raise ConfigError(f"--set {item!r}: '{part}' is inside a value that is not a mapping")


def _set(node: Any, part: str, value: Any, item: str) -> None:
    if isinstance(node, list):
        _child(node, part, item)
        node[int(part)] = value
    elif isinstance(node, dict):
        node[part] = value
    else:
        raise ConfigError(f"--set {item!r}: '{part}' is inside a value that is not a mapping")


def validate_experiment(raw: dict[str, Any], source: str = "config") -> ExperimentConfig:
    """Validate a raw dict into an ``ExperimentConfig``.

    Raises:
        ConfigError: listing every error with its path.
    """
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None
