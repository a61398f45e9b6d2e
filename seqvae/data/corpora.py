"""Reading text corpora from files: one sentence per line, with errors that name file and line.

This module does the parsing that the ``text``, ``labeled-text`` and ``ptb`` datasets share:

- the file must exist, be non-empty and be valid UTF-8 (a bad byte is reported with its line);
- empty lines are an error by default (``empty_lines="skip"`` skips and counts them);
- sentences longer than ``max_length`` words are an error by default, or dropped or truncated
  (``length_policy``), and every drop or truncation is counted in ``ReadStats``;
- a label is either given for the whole file or read from the start of each line
  (``LABEL<TAB>sentence``).

No torch import: turning words into ids happens in [`encode_splits`][seqvae.data.corpus.encode_splits].
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

__all__ = [
    "CorpusError",
    "ReadStats",
    "SplitText",
    "download_file",
    "read_sentences",
    "sha256_of",
    "tokenize",
]

log = logging.getLogger(__name__)

Tokenizer = Literal["whitespace", "simple"]
LengthPolicy = Literal["error", "drop", "truncate"]
EmptyLines = Literal["error", "skip"]

# "simple": runs of word characters (with inner apostrophes/hyphens) or single punctuation marks.
_SIMPLE = re.compile(r"\w+(?:['\-]\w+)*|[^\w\s]")


class CorpusError(ValueError):
    """Bad corpus input. The message starts with ``file:line:`` where a line is known."""


@dataclass
class ReadStats:
    """What reading one file did, for the run's record."""

    path: str
    lines: int = 0
    sentences: int = 0
    words: int = 0
    empty_skipped: int = 0
    dropped_too_long: int = 0
    truncated: int = 0

    def as_dict(self) -> dict[str, int | str]:
        """Plain data for ``result.json``."""
        return asdict(self)


@dataclass
class SplitText:
    """The tokenised sentences of one split, their optional labels and how they were read."""

    sentences: list[list[str]] = field(default_factory=list)
    labels: list[int] | None = None
    stats: list[ReadStats] = field(default_factory=list)


def tokenize(line: str, tokenizer: Tokenizer = "whitespace", lowercase: bool = False) -> list[str]:
    """Split one line into words.

    >>> tokenize("Don't stop-believing, ok?", "simple", lowercase=True)
    ["don't", 'stop-believing', ',', 'ok', '?']
    >>> tokenize(" the N cats <unk> ")
    ['the', 'N', 'cats', '<unk>']
    """
    if lowercase:
        line = line.lower()
    return _SIMPLE.findall(line) if tokenizer == "simple" else line.split()


def _read_text(path: Path) -> str:
    if not path.exists():
        raise CorpusError(f"{path}: file not found")
    if path.is_dir():
        raise CorpusError(f"{path}: is a directory, expected a text file with one sentence per line")
    data = path.read_bytes()
    if not data.strip():
        raise CorpusError(f"{path}: file is empty (expected one sentence per line)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        col = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
        raise CorpusError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{data[exc.start]:02x} at column {col}); "
            "expected a UTF-8 text file"
        ) from None


def read_sentences(
    path: str | Path,
    *,
    tokenizer: Tokenizer = "whitespace",
    lowercase: bool = False,
    max_length: int | None = None,
    length_policy: LengthPolicy = "error",
    empty_lines: EmptyLines = "error",
    label: int | None = None,
    label_per_line: bool = False,
    label_names: Sequence[str] | None = None,
) -> SplitText:
    """Read one file of sentences (one per line).

    Args:
        path: the file.
        tokenizer: ``whitespace`` (split on spaces) or ``simple`` (words and punctuation marks).
        lowercase: lower-case every line before tokenising.
        max_length: longest sentence in words; ``None`` = no limit.
        length_policy: what to do with a longer sentence: ``error``, ``drop`` or ``truncate``.
        empty_lines: ``error`` or ``skip`` (a line with no words after tokenising).
        label: the label of every sentence of the file (e.g. ``sentiment.dev.1`` -> 1).
        label_per_line: read the label from the start of each line, ``LABEL<TAB>sentence``.
        label_names: when given, line labels must be one of these strings; the label id is its index.
            Otherwise line labels must be non-negative integers.

    Raises:
        CorpusError: naming the file (and line) and what was expected.
    """
    path = Path(path)
    text = _read_text(path)
    stats = ReadStats(path=str(path))
    out = SplitText(labels=[] if (label is not None or label_per_line) else None, stats=[stats])
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()  # the final newline does not start a line
    for lineno, raw in enumerate(lines, start=1):
        stats.lines += 1
        line = raw.rstrip("\r")
        line_label = label
        if label_per_line:
            head, sep, rest = line.partition("\t")
            if not sep:
                raise CorpusError(f"{path}:{lineno}: expected 'LABEL<TAB>sentence', found no tab")
            line_label = _parse_label(head.strip(), label_names, path, lineno)
            line = rest
        words = tokenize(line, tokenizer, lowercase)
        if not words:
            if empty_lines == "skip":
                stats.empty_skipped += 1
                continue
            raise CorpusError(
                f"{path}:{lineno}: empty line (expected one sentence per line; "
                "set empty_lines: skip to skip such lines)"
            )
        if max_length is not None and len(words) > max_length:
            if length_policy == "error":
                raise CorpusError(
                    f"{path}:{lineno}: sentence of {len(words)} words is longer than max_length={max_length} "
                    "(set length_policy to drop or truncate)"
                )
            if length_policy == "drop":
                stats.dropped_too_long += 1
                continue
            words = words[:max_length]
            stats.truncated += 1
        out.sentences.append(words)
        if out.labels is not None:
            out.labels.append(int(line_label))  # type: ignore[arg-type]
        stats.words += len(words)
    stats.sentences = len(out.sentences)
    if not out.sentences:
        raise CorpusError(f"{path}: no sentences left after reading ({stats.as_dict()})")
    if stats.dropped_too_long or stats.truncated or stats.empty_skipped:
        log.info(
            "%s: %d sentences; %d dropped as too long, %d truncated, %d empty lines skipped",
            path, stats.sentences, stats.dropped_too_long, stats.truncated, stats.empty_skipped,
        )
    return out


def _parse_label(head: str, names: Sequence[str] | None, path: Path, lineno: int) -> int:
    if names is not None:
        if head not in names:
            raise CorpusError(f"{path}:{lineno}: label '{head}' is not one of {list(names)}")
        return list(names).index(head)
    if not head.isdigit():
        raise CorpusError(f"{path}:{lineno}: label '{head}' is not a non-negative integer")
    return int(head)


def concat(parts: Sequence[SplitText]) -> SplitText:
    """Join the splits read from several files (e.g. ``sentiment.dev.0`` + ``sentiment.dev.1``)."""
    out = SplitText(labels=[] if all(p.labels is not None for p in parts) else None)
    for p in parts:
        out.sentences.extend(p.sentences)
        out.stats.extend(p.stats)
        if out.labels is not None:
            out.labels.extend(p.labels or [])
    return out


def sha256_of(path: str | Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def download_file(url: str, dest: str | Path, sha256: str, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` and check its SHA-256; nothing is left at ``dest`` on failure.

    The data go to a temporary file next to ``dest`` that is renamed only after the checksum matched.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=dest.parent, prefix=dest.name, suffix=".part", delete=False) as tmp:
        tmp_path = Path(tmp.name)
        try:
            log.info("downloading %s -> %s", url, dest)
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 (http(s) or file URL)
                shutil.copyfileobj(response, tmp)
        except OSError as exc:
            tmp_path.unlink(missing_ok=True)
            raise CorpusError(f"{url}: download failed ({exc}); download it by hand into {dest.parent}") from None
    got = sha256_of(tmp_path)
    if got != sha256:
        tmp_path.unlink(missing_ok=True)
        raise CorpusError(f"{url}: checksum mismatch (sha256 {got}, expected {sha256}); nothing was saved")
    tmp_path.replace(dest)
    return dest
