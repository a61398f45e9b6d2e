"""``text`` and ``labeled-text``: any corpus stored as one sentence per line.

``text`` reads a ``train`` split and optional ``valid`` / ``test`` splits, each one file or a list
of files. ``labeled-text`` also keeps an integer label per sentence, given either for a whole file
(``{path: sentiment.dev.1, label: 1}``) or at the start of each line (``1<TAB>the food was great``).

The vocabulary is built from the train split only (``min_freq``, ``max_size``); words of the other
splits that it lacks become ``<unk>``. What reading did (sentences, dropped or truncated ones,
skipped empty lines) is kept in ``Corpus.info["read"]`` and written to the run's ``result.json``.

Example (YAML)::

    data:
      dataset:
        kind: labeled-text
        data_dir: data/yelp_short
        train: [{path: sentiment.dev.0, label: 0}, {path: sentiment.dev.1, label: 1}]
        test: [{path: sentiment.test.0, label: 0}, {path: sentiment.test.1, label: 1}]
        max_length: 40
        length_policy: drop
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from seqvae.config import ComponentConfig
from seqvae.data import corpora
from seqvae.data.corpora import EmptyLines, LengthPolicy, SplitText, Tokenizer
from seqvae.data.corpus import Corpus, encode_splits
from seqvae.data.vocab import Vocab
from seqvae.interfaces import DatasetBuilder

__all__ = ["FileSpec", "LabeledTextDataset", "TextDataset", "TextDatasetConfig"]

SPLITS = ("train", "valid", "test")


class FileSpec(BaseModel):
    """One corpus file and, for ``labeled-text``, the label of all its sentences."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="File path, relative to data_dir when that is set.")
    label: int | None = Field(None, ge=0, description="Label of every sentence; None = read per line.")


def _as_files(value: Any) -> Any:
    if value is None:
        return None
    items = value if isinstance(value, list) else [value]
    return [{"path": str(v)} if isinstance(v, (str, Path)) else v for v in items]


class TextDatasetConfig(ComponentConfig):
    """Config of the ``text`` dataset (``labeled-text`` adds label options)."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"data_dir": "data", "train": "train.txt", "test": "test.txt"}]}
    )

    data_dir: str | None = Field(None, description="Folder that relative file paths are read from.")
    train: list[FileSpec] = Field(description="Train file(s): a path, a list, or {path, label} entries.")
    valid: list[FileSpec] | None = Field(None, description="Validation file(s); optional.")
    test: list[FileSpec] | None = Field(None, description="Test file(s); needed to evaluate on 'test'.")
    tokenizer: Tokenizer = Field("whitespace", description="whitespace, or simple (words and punctuation).")
    lowercase: bool = Field(False, description="Lower-case the text before tokenising.")
    max_length: int | None = Field(
        1000, ge=1, description="Longest sentence in words (1000 keeps every standard corpus whole, Yahoo's "
        "documents included, and keeps a stray huge line from stalling training); None = no limit.",
    )
    length_policy: LengthPolicy = Field(
        "truncate", description="A sentence over max_length is truncated, dropped (both counted and reported), "
        "or an error naming its file and line.",
    )
    empty_lines: EmptyLines = Field("error", description="An empty line is an error, or skipped (counted).")
    min_freq: int = Field(1, ge=1, description="Keep train words seen at least this often.")
    max_size: int | None = Field(None, ge=5, description="Largest vocabulary, special tokens included.")

    _split_files = field_validator("train", "valid", "test", mode="before")(_as_files)


class TextDataset(DatasetBuilder):
    """Sentences from text files, one per line (registry name ``text``)."""

    Config = TextDatasetConfig

    def read_split(self, files: list[FileSpec]) -> SplitText:
        """Read and join the files of one split."""
        c = self.config
        base = Path(c.data_dir) if c.data_dir else None
        parts = []
        for spec in files:
            path = base / spec.path if base is not None else Path(spec.path)
            parts.append(corpora.read_sentences(
                path, tokenizer=c.tokenizer, lowercase=c.lowercase, max_length=c.max_length,
                length_policy=c.length_policy, empty_lines=c.empty_lines, **self._label_args(spec),
            ))
        return corpora.concat(parts)

    def _label_args(self, spec: FileSpec) -> dict[str, Any]:
        return {}

    def read_all(self) -> dict[str, SplitText]:
        """The splits named in the config, read and tokenised (not yet ids)."""
        c = self.config
        return {name: self.read_split(getattr(c, name)) for name in SPLITS if getattr(c, name)}

    def load(self, cache_dir: Path) -> Corpus:
        """Read the files, build the vocabulary from train and encode every split."""
        c = self.config
        texts = self.read_all()
        vocab = Vocab.build(texts["train"].sentences, min_freq=c.min_freq, max_size=c.max_size)
        return encode_splits(texts, vocab)


class LabeledTextDataset(TextDataset):
    """Sentences with an integer label each (registry name ``labeled-text``), e.g. Yelp sentiment."""

    class Config(TextDatasetConfig):
        label_names: list[str] | None = Field(
            None, description="Allowed per-line labels (label id = position); None = integers 0, 1, ..."
        )

    def _label_args(self, spec: FileSpec) -> dict[str, Any]:
        if spec.label is not None:
            return {"label": spec.label}
        return {"label_per_line": True, "label_names": self.config.label_names}
