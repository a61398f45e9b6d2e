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

from seqvae.composer import build_model, component_provenance
from seqvae.config import ComponentConfig, ConfigError, ExperimentConfig
from seqvae.data.corpus import Corpus
from seqvae.data.datamodule import TextDataModule, eval_batches
from seqvae.interfaces import Batch, Strategy
from seqvae.metrics import evaluate
from seqvae.model import SequenceVAE
from seqvae.registry import get_registry

__all__ = [
    "VAESystem",
    "build_strategy",
    "default_cache_dir",
    "evaluate_run",
    "load_checkpoint",
    "load_corpus",
    "run_experiment",
    "save_checkpoint",
    "write_plots",
]

log = logging.getLogger(__name__)
CHECKPOINT_FORMAT = "seqvae-checkpoint/1"


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

    def forward(self, batch: Batch):
        step, total = self.global_step, self.cfg.train.max_steps
        beta = self.strategy.beta(self.model.schedule, step, total)
        return self.model(batch, step=step, total_steps=total, beta=beta)

    def on_train_start(self) -> None:
        self.strategy.on_train_start(self)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.strategy.before_optimizer_step(self, self.global_step)

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        self.strategy.before_step(self, batch, self.global_step)
        out = self(batch)
        self.tokens_seen += batch.lengths.sum()
        self.log_dict(
            {f"train/{k}": v.detach() for k, v in out.terms.items()}, on_step=True, on_epoch=False,
            batch_size=batch.size,
        )
        self.log("train/beta", out.beta, on_step=True, on_epoch=False, batch_size=batch.size)
        return out.loss

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        post = self.model.encode(batch)
        rec = self.model.reconstruction_nll(batch, post.rsample())
        kl = self.model.prior.kl(post).per_dim.sum(-1)
        self.log("val/neg_elbo", (rec + kl).mean(), on_epoch=True, batch_size=batch.size)
        self.log("val/kl", kl.mean(), on_epoch=True, batch_size=batch.size)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.model.parameters(), lr=self.cfg.train.lr)


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
        raise ValueError(f"{path}: not a readable seqvae checkpoint ({type(exc).__name__}: {exc})") from None
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
    """``\n  decoder 'x' came from pkg==1.0: install it`` for each stored component not installed now."""
    from seqvae.registry import RegistryError

    lines = []
    for key, provider in components.items():
        kind, _, name = key.partition(":")
        try:
            get_registry(kind).get(name)
        except (RegistryError, ValueError):
            lines.append(f"\n  {kind} '{name}' came from {provider}: install that package to load this checkpoint")
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
) -> dict[str, Any]:
    """The metric set of ``model`` on a split of ``corpus`` with the settings of ``cfg.eval``.

    ``split`` and ``iw_samples`` override the config's. Timing is added as ``eval_seconds``.
    """
    e = cfg.eval
    split = split or e.split
    start = time.perf_counter()
    batches = eval_batches(corpus.split(split), corpus.vocab, cfg.data.eval_batch_size)
    metrics = evaluate(
        model, batches, seed=cfg.train.seed, au_threshold=e.au_threshold, collapse_kl=e.collapse_kl,
        iw_samples=e.iw_samples if iw_samples is None else iw_samples, device=device,
    )
    return {"split": split, "metrics": metrics, "eval_seconds": round(time.perf_counter() - start, 3)}


def run_experiment(
    cfg: ExperimentConfig,
    run_dir: str | Path,
    *,
    cache_dir: str | Path | None = None,
    progress: bool = False,
    corpus: Corpus | None = None,
    reuse_training: bool = False,
) -> dict[str, Any]:
    """Train ``cfg`` with Lightning, evaluate it, and write the run folder.

    The folder receives ``config.json`` (resolved config), ``logs/metrics.csv`` (training curves),
    ``checkpoint.pt`` and ``trained.json`` (written as soon as training ends), and ``result.json``
    (metrics, provenance, timings). ``corpus`` skips loading the data set (a grid passes the one it
    loaded for all its cells). With ``reuse_training``, a folder whose training of this same config
    finished (``trained.json`` + checkpoint) is only evaluated: a long evaluation that was
    interrupted does not cost the training again.

    Returns:
        The ``result.json`` content.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    quiet_lightning(verbose=log.isEnabledFor(logging.DEBUG))
    t = cfg.train
    if corpus is None:
        corpus = load_corpus(cfg.data.dataset, cache_dir)
    trained = _finished_training(run_dir, cfg) if reuse_training else None
    if trained is not None:
        log.info("%s: training already finished; evaluating the saved checkpoint", run_dir)
        model, _, _ = load_checkpoint(run_dir / "checkpoint.pt")
        device = torch.device("cuda" if t.accelerator != "cpu" and torch.cuda.is_available() else "cpu")
        model.to(device)
    else:
        (run_dir / "config.json").write_text(json.dumps(cfg.model_dump(mode="json"), indent=2))
        model, trained, device = _train(cfg, run_dir, corpus, progress)
    evaluated = evaluate_run(model, cfg, corpus, device=device)
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
        "data": {k: corpus.info[k] for k in ("sentences", "tokens", "vocab_size", "read", "unk_tokens")
                 if k in corpus.info},
        "versions": _versions(),
        "command": sys.argv,
        "status": "ok",
    }
    result["plots"] = write_plots(run_dir, model, cfg, corpus)
    (run_dir / "result.json").write_text(json.dumps(result, indent=2))
    return result


def _train(cfg: ExperimentConfig, run_dir: Path, corpus: Corpus, progress: bool) -> tuple[SequenceVAE, dict, Any]:
    """Fit ``cfg`` with Lightning; save the checkpoint and ``trained.json``. Returns (model, trained, device)."""
    t = cfg.train
    L.seed_everything(t.seed, workers=True, verbose=False)
    model = build_model(cfg, corpus.vocab)
    system = VAESystem(model, cfg)
    dm = TextDataModule(corpus, cfg.data.batch_size, cfg.data.eval_batch_size, cfg.data.bucket_factor, t.seed)
    validate = t.val_every is not None
    trainer = L.Trainer(
        accelerator=t.accelerator,
        devices=1,
        precision=t.precision,
        max_steps=t.max_steps,
        max_epochs=-1,
        logger=CSVLogger(str(run_dir), name="logs", version=""),
        enable_checkpointing=False,
        enable_progress_bar=progress,
        enable_model_summary=False,
        gradient_clip_val=t.grad_clip or None,
        log_every_n_steps=t.log_every,
        val_check_interval=t.val_every if validate else None,
        check_val_every_n_epoch=None if validate else 1,
        limit_val_batches=None if validate else 0,
        num_sanity_val_steps=0,
    )
    start = time.perf_counter()
    with warnings.catch_warnings():
        for msg in (".*does not have many workers.*", ".*IterableDataset.*", ".*LeafSpec.*",
                    ".*smaller than the logging interval.*"):
            warnings.filterwarnings("ignore", message=msg)
        trainer.fit(system, datamodule=dm)
    train_s = time.perf_counter() - start
    tokens = int(system.tokens_seen)
    save_checkpoint(run_dir / "checkpoint.pt", model, cfg, corpus.vocab.to_list())
    trained = {
        "steps": int(trainer.global_step),
        "train_seconds": round(train_s, 3),
        "train_tokens_per_second": round(tokens / train_s, 1) if train_s > 0 else None,
        "strategy_state": system.strategy.state(),
    }
    tmp = run_dir / "trained.json.tmp"
    tmp.write_text(json.dumps({"config": cfg.model_dump(mode="json"), **trained}, indent=2))
    tmp.replace(run_dir / "trained.json")
    return model, trained, system.device


def _finished_training(run_dir: Path, cfg: ExperimentConfig) -> dict[str, Any] | None:
    """``trained.json`` (less its config) when ``run_dir`` holds a finished training of ``cfg``."""
    from seqvae.config import validate_experiment

    try:
        data = json.loads((run_dir / "trained.json").read_text())
        same = validate_experiment(data.pop("config")).model_dump(mode="json") == cfg.model_dump(mode="json")
    except (OSError, ValueError, KeyError):
        return None
    return data if same and (run_dir / "checkpoint.pt").exists() else None


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
