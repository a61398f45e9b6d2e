"""A word vocabulary with the four special tokens every seqvae model uses. No torch import."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["PAD", "BOS", "EOS", "UNK", "SPECIALS", "Vocab"]

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIALS = (PAD, BOS, EOS, UNK)


class Vocab:
    """Maps words to ids. Ids 0-3 are ``<pad> <bos> <eos> <unk>``; unknown words map to ``<unk>``."""

    def __init__(self, words: Sequence[str]):
        words = list(words)
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise ValueError(f"a vocabulary must start with the special tokens {SPECIALS}")
        if len(set(words)) != len(words):
            raise ValueError("a vocabulary may not list a word twice")
        self.itos = words
        self.stoi = {w: i for i, w in enumerate(words)}

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    @classmethod
    def build(
        cls, sentences: Iterable[Sequence[str]], min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        """Build from tokenised sentences: words seen ``min_freq`` times or more, most frequent first.

        Ties are broken alphabetically so the result does not depend on the input order.
        """
        counts = Counter(w for s in sentences for w in s if w not in SPECIALS)
        ranked = sorted((w for w, c in counts.items() if c >= min_freq), key=lambda w: (-counts[w], w))
        if max_size is not None:
            ranked = ranked[: max(0, max_size - len(SPECIALS))]
        return cls([*SPECIALS, *ranked])

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, words: Sequence[str]) -> list[int]:
        """Ids of ``words``; words not in the vocabulary become ``<unk>``."""
        unk = self.unk_id
        return [self.stoi.get(w, unk) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """The words of ``ids``."""
        return [self.itos[i] for i in ids]

    def to_list(self) -> list[str]:
        """The words in id order (what checkpoints store)."""
        return list(self.itos)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Vocab) and self.itos == other.itos
