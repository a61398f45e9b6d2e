"""Loading a corpus by its dataset config, through the registry (``load_corpus``), and the data cache."""

from __future__ import annotations

import os
from pathlib import Path

from seqvae.component_config import ComponentConfig
from seqvae.data.corpus import Corpus
from seqvae.registry import get_registry

__all__ = ["default_cache_dir", "load_corpus"]


def default_cache_dir() -> Path:
    """``$SEQVAE_CACHE`` or ``~/.cache/seqvae``: where generated data sets are cached."""
    return Path(os.environ.get("SEQVAE_CACHE", Path.home() / ".cache" / "seqvae"))


def load_corpus(dataset: ComponentConfig, cache_dir: str | Path | None = None) -> Corpus:
    """Build the corpus that a dataset config names (``cfg.data.dataset``) through the registry.

    Raises:
        seqvae.data.corpora.CorpusError: bad corpus input, naming the file and line.
    """
    builder = get_registry("dataset").get(dataset.kind)(dataset)
    return builder.load(Path(cache_dir) if cache_dir else default_cache_dir())
