"""seqvae's checkpoint format (``checkpoint.pt``), the RNG state that ``resume.ckpt`` carries, and
reading the step of a resume checkpoint. Nothing loaded from a file is executed (``weights_only``)."""

from __future__ import annotations

import platform
from pathlib import Path
from typing import Any

import torch

from seqvae.composer import build_model, component_provenance
from seqvae.config import ConfigError, ExperimentConfig, validate_experiment
from seqvae.data.vocab import Vocab
from seqvae.model import SequenceVAE
from seqvae.registry import RegistryError, get_registry
from seqvae.run_dir import load_error, temporary_path

__all__ = ["CHECKPOINT_FORMAT", "ResumeError", "checkpoint_step", "load_checkpoint", "rng_state", "save_checkpoint",
           "set_rng_state", "versions"]

CHECKPOINT_FORMAT = "seqvae-checkpoint/1"


class ResumeError(ValueError):
    """A run folder's ``resume.ckpt`` cannot be used (unreadable, or not a training checkpoint)."""


def rng_state() -> dict[str, Any]:
    """The torch, Python, NumPy (and CUDA) RNG states, as plain types and tensors (``weights_only`` loads them)."""
    import random

    import numpy as np

    name, keys, pos, has_gauss, cached = np.random.get_state()
    # plain types and tensors only, so the checkpoint loads with ``weights_only=True``
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached)}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the RNG states that ``rng_state`` returned."""
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def versions() -> dict[str, str]:
    """The versions of seqvae, torch, Lightning and Python, as recorded in checkpoints and results."""
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
        "versions": versions(),
        "components": component_provenance(cfg),
    }
    tmp = temporary_path(path)
    torch.save(payload, tmp)
    tmp.replace(path)


def load_checkpoint(path: str | Path) -> tuple[SequenceVAE, ExperimentConfig, Any]:
    """Rebuild a model from a checkpoint through the registry; never executes code from the file."""
    path = Path(path)
    try:
        payload = torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"{path}: checkpoint not found") from None
    except Exception as exc:
        raise ValueError(f"{path}: not a readable seqvae checkpoint ({load_error(exc)})") from None
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
    lines = []
    for key, provider in components.items():
        kind, _, name = key.partition(":")
        try:
            get_registry(kind).get(name)
        except (RegistryError, ValueError):
            lines.append(f"; {kind} '{name}' came from {provider}: install that package to load this checkpoint")
    return "".join(lines)


def checkpoint_step(path: Path) -> int:
    """The global step stored in a Lightning checkpoint (loaded without executing code)."""
    try:
        return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])
    except Exception as exc:
        raise ResumeError(f"{path}: not a readable resume checkpoint ({load_error(exc)})") from None
