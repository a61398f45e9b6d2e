"""Length-bucketed batching and the Lightning data module."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset

from seqvae.data.corpus import Corpus, TokenStore
from seqvae.data.vocab import Vocab
from seqvae.data.batch import Batch

__all__ = ["BucketedBatches", "TextDataModule", "bucket_plan", "eval_batches"]


def bucket_plan(
    lengths: torch.Tensor, batch_size: int, bucket_factor: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """Shuffled batches of indices (each ``b``) whose sentences (``lengths: n``) have similar lengths.

    The split is shuffled, cut into pools of ``batch_size * bucket_factor`` sentences, each pool is
    sorted by length and cut into batches, and the batch order is shuffled again.
    """
    perm = torch.randperm(len(lengths), generator=generator)
    pool = batch_size * bucket_factor
    batches: list[torch.Tensor] = []
    for start in range(0, len(perm), pool):
        chunk = perm[start : start + pool]
        chunk = chunk[torch.argsort(lengths[chunk], stable=True)]
        batches.extend(torch.split(chunk, batch_size))
    order = torch.randperm(len(batches), generator=generator)
    return [batches[i] for i in order.tolist()]


def eval_batches(store: TokenStore, vocab: Vocab, batch_size: int) -> list[Batch]:
    """Deterministic evaluation batches: the whole split sorted by length, then cut."""
    order = torch.argsort(store.lengths, stable=True)
    return [store.batch(idx, vocab) for idx in torch.split(order, batch_size)]


class BucketedBatches(IterableDataset):
    """Bucketed training batches, one epoch per ``iter()``, a new order every epoch.

    The stream is a pure function of ``(seed, step)``: batch ``s`` is batch ``s % len(self)`` of the
    plan of epoch ``s // len(self)``. Each ``iter()`` starts at step ``position()`` when that callable
    is given (the training loop passes its global step, so a resumed run, or a loop that asks for a
    fresh iterator, sees exactly the batches an uninterrupted run would) and runs to the end of
    that epoch; without it, at ``next_step``, which advances with every batch yielded.
    """

    def __init__(
        self, store: TokenStore, vocab: Vocab, batch_size: int, bucket_factor: int, seed: int,
        position: Callable[[], int] | None = None,
    ):
        super().__init__()
        self.store, self.vocab = store, vocab
        self.batch_size, self.bucket_factor, self.seed = batch_size, bucket_factor, seed
        self.position = position
        self.next_step = 0
        self.rank, self.world = 0, 1  # data-parallel training: this process's share of every batch

    def __len__(self) -> int:
        return -(-len(self.store) // self.batch_size)

    def __iter__(self) -> Iterator[Batch]:
        start = self.position() if self.position is not None else self.next_step
        epoch, offset = divmod(start, len(self))
        g = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        plan = bucket_plan(self.store.lengths, self.batch_size, self.bucket_factor, g)
        self.next_step = start
        for idx in plan[offset:]:
            self.next_step += 1
            if self.world > 1:  # rows rank, rank + world, ...: equal shares of the global batch
                idx = idx[self.rank :: self.world] if len(idx) >= self.world else idx[self.rank % len(idx) :][:1]
            yield self.store.batch(idx, self.vocab)


def _identity(x: Batch) -> Batch:
    return x


class _PositionedLoader(DataLoader):
    """A loader whose position is the trainer's step (see ``BucketedBatches``).

    It has the ``state_dict`` interface so Lightning treats it as resumable mid-epoch; the state
    itself is the global step, which Lightning restores before it asks for the loader.
    """

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state_dict: dict) -> None:
        pass


class TextDataModule(L.LightningDataModule):
    """Serves a ``Corpus``: bucketed, reshuffled training batches and fixed evaluation batches."""

    def __init__(self, corpus: Corpus, batch_size: int, eval_batch_size: int, bucket_factor: int, seed: int):
        super().__init__()
        self.corpus = corpus
        self.batch_size, self.eval_batch_size = batch_size, eval_batch_size
        self.bucket_factor, self.seed = bucket_factor, seed

    def train_dataloader(self) -> DataLoader:
        # every epoch's iterator starts at the trainer's global step (restored by a resume)
        trainer = self.trainer
        ds = BucketedBatches(
            self.corpus.split("train"), self.corpus.vocab, self.batch_size, self.bucket_factor, self.seed,
            position=(lambda: trainer.global_step) if trainer is not None else None,
        )
        if trainer is not None and trainer.world_size > 1:
            ds.rank, ds.world = trainer.global_rank, trainer.world_size
        # its own generator: a DataLoader draws a base seed at every iter(), and from the global RNG
        # that draw would make the training noise depend on when the loop asks for a new iterator
        return _PositionedLoader(ds, batch_size=None, collate_fn=_identity, generator=torch.Generator())

    def val_dataloader(self) -> DataLoader:
        if "valid" not in self.corpus.splits:  # nothing to validate on (training then never validates)
            return DataLoader([], batch_size=None, collate_fn=_identity)
        batches = eval_batches(self.corpus.split("valid"), self.corpus.vocab, self.eval_batch_size)
        return DataLoader(batches, batch_size=None, collate_fn=_identity)
