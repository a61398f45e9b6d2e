"""Tokenised corpora held as flat id tensors, and vectorised batch construction."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from seqvae.data.corpora import CorpusError, SplitText
from seqvae.data.vocab import Vocab
from seqvae.data.batch import Batch

__all__ = ["Corpus", "TokenStore", "encode_splits"]


@dataclass
class TokenStore:
    """Sentences of one split as one flat id tensor plus offsets (no per-sentence Python objects).

    Attributes:
        flat: all word ids of the split, concatenated (long).
        offsets: start of each sentence in ``flat`` (long, one per sentence).
        lengths: words per sentence, without ``<bos>``/``<eos>`` (long).
        labels: optional integer label per sentence (e.g. the mixture component or a sentiment).
    """

    flat: Tensor
    offsets: Tensor
    lengths: Tensor
    labels: Tensor | None = None

    @classmethod
    def from_lists(cls, sentences: list[list[int]], labels: list[int] | None = None) -> TokenStore:
        lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
        offsets = torch.zeros_like(lengths)
        if len(lengths) > 1:
            offsets[1:] = torch.cumsum(lengths, 0)[:-1]
        flat = torch.tensor([w for s in sentences for w in s], dtype=torch.long)
        lab = torch.tensor(labels, dtype=torch.long) if labels is not None else None
        return cls(flat, offsets, lengths, lab)

    @classmethod
    def from_matrix(cls, ids: Tensor, labels: Tensor | None = None) -> TokenStore:
        """Equal-length sentences given as an ``n t`` id matrix."""
        n, t = ids.shape
        return cls(ids.reshape(-1).long(), torch.arange(n) * t, torch.full((n,), t), labels)

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def num_tokens(self) -> int:
        """Predicted tokens: words plus one ``<eos>`` per sentence."""
        return int(self.lengths.sum()) + len(self)

    def sentence(self, i: int) -> list[int]:
        """The word ids of sentence ``i`` (no specials)."""
        start = int(self.offsets[i])
        return self.flat[start : start + int(self.lengths[i])].tolist()

    def batch(self, index: Tensor, vocab: Vocab) -> Batch:
        """The padded ``Batch`` of the sentences ``index: b`` (tokens ``b (t+1)``), built without a Python loop."""
        index = torch.as_tensor(index, dtype=torch.long)
        lengths = self.lengths[index]  # b
        b = index.shape[0]
        width = int(lengths.max()) if b else 0
        pos = torch.arange(width)
        valid = pos[None, :] < lengths[:, None]  # b w
        src = (self.offsets[index][:, None] + pos[None, :]).clamp(max=max(len(self.flat) - 1, 0))
        words = self.flat[src] if len(self.flat) else torch.zeros((b, width), dtype=torch.long)
        tokens = torch.full((b, width + 2), vocab.pad_id, dtype=torch.long)
        tokens[:, 0] = vocab.bos_id
        tokens[:, 1 : width + 1] = torch.where(valid, words, vocab.pad_id)
        tokens[torch.arange(b), lengths + 1] = vocab.eos_id
        labels = self.labels[index] if self.labels is not None else None
        return Batch(tokens, lengths + 1, vocab.pad_id, labels)


@dataclass
class Corpus:
    """A vocabulary and its tokenised splits (``train``, ``valid``, ``test``)."""

    vocab: Vocab
    splits: dict[str, TokenStore]
    info: dict[str, object] = field(default_factory=dict)

    def split(self, name: str) -> TokenStore:
        """The split ``name`` (``train``, ``valid`` or ``test``); a clear error if the corpus lacks it."""
        if name not in self.splits:
            raise ValueError(f"the corpus has no split '{name}' (it has: {', '.join(self.splits)})")
        return self.splits[name]


def encode_splits(texts: dict[str, SplitText], vocab: Vocab) -> Corpus:
    """Turn tokenised splits into id stores under ``vocab``; reading statistics go to ``info``."""
    if "train" not in texts:
        raise CorpusError("a corpus needs a train split")
    splits = {}
    unk = {}
    for name, text in texts.items():
        ids = [vocab.encode(s) for s in text.sentences]
        unk[name] = sum(i.count(vocab.unk_id) for i in ids)
        splits[name] = TokenStore.from_lists(ids, text.labels)
    info = {
        "vocab_size": len(vocab),
        "read": {name: [s.as_dict() for s in t.stats] for name, t in texts.items()},
        "unk_tokens": unk,
        "sentences": {name: len(s) for name, s in splits.items()},
        "tokens": {name: s.num_tokens for name, s in splits.items()},
    }
    return Corpus(vocab, splits, info=info)
