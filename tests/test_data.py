"""Vocabulary, vectorised batching, length bucketing and the synthetic corpus."""

from __future__ import annotations

import torch

from seqvae.components.datasets.synthetic import SyntheticDataset
from seqvae.data.corpus import TokenStore
from seqvae.data.datamodule import bucket_plan, eval_batches
from seqvae.data.vocab import SPECIALS, Vocab


def test_vocab_build_is_order_independent_and_maps_unknowns():
    sents = [["b", "a", "a"], ["c", "a", "b"], ["d"]]
    v = Vocab.build(sents, min_freq=2)
    assert v.itos == [*SPECIALS, "a", "b"]
    assert Vocab.build(list(reversed(sents)), min_freq=2) == v
    assert v.encode(["a", "zzz"]) == [4, v.unk_id]
    assert len(Vocab.build(sents, max_size=5)) == 5


def test_batch_matches_a_naive_construction():
    vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(10))])
    sents = [[4, 5, 6], [7], [8, 9, 10, 11, 12], []]
    store = TokenStore.from_lists(sents)
    batch = store.batch(torch.tensor([2, 0, 3, 1]), vocab)
    expected = [
        [1, 8, 9, 10, 11, 12, 2],
        [1, 4, 5, 6, 2, 0, 0],
        [1, 2, 0, 0, 0, 0, 0],
        [1, 7, 2, 0, 0, 0, 0],
    ]
    assert batch.tokens.tolist() == expected
    assert batch.lengths.tolist() == [6, 4, 1, 2]
    assert batch.mask.sum().item() == 13 and store.num_tokens == 13
    assert batch.targets[batch.mask].ne(0).all() and batch.targets[~batch.mask].eq(0).all()


def test_bucket_plan_covers_every_sentence_once_with_similar_lengths():
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(1, 60, (1000,))
    plan = bucket_plan(lengths, batch_size=16, bucket_factor=20, generator=g)
    flat = torch.cat(plan)
    assert sorted(flat.tolist()) == list(range(1000))
    spread = sum(int(lengths[b].max() - lengths[b].min()) for b in plan) / len(plan)
    random_spread = sum(int(lengths[b].max() - lengths[b].min()) for b in torch.randperm(1000).split(16)) / 63
    assert spread < random_spread / 4  # bucketing keeps padding small
    plan2 = bucket_plan(lengths, 16, 20, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip(plan, plan2))  # seeded: reproducible


def test_eval_batches_sorted_and_complete():
    store = TokenStore.from_lists([[4] * n for n in (5, 1, 3, 2, 4)])
    vocab = Vocab([*SPECIALS, "x"])
    batches = eval_batches(store, vocab, batch_size=2)
    assert [b.lengths.tolist() for b in batches] == [[2, 3], [4, 5], [6]]


def test_synthetic_corpus_is_deterministic_and_cached(tmp_path):
    cfg = SyntheticDataset.Config(kind="synthetic", n_sentences=400, n_train=300, n_valid=50)
    a = SyntheticDataset(cfg).load(tmp_path)
    cached = list((tmp_path / "synthetic").glob("*.pt"))
    assert len(cached) == 1
    b = SyntheticDataset(cfg).load(tmp_path)  # from the cache
    c = SyntheticDataset(cfg).load(tmp_path / "other")  # regenerated
    for split, n in (("train", 300), ("valid", 50), ("test", 50)):
        assert len(a.split(split)) == n
        assert torch.equal(a.split(split).flat, b.split(split).flat)
        assert torch.equal(a.split(split).flat, c.split(split).flat)
    train = a.split("train")
    assert train.lengths.eq(10).all() and len(a.vocab) == 1004
    assert train.flat.min() >= 4 and train.flat.max() < 1004
    assert set(train.labels.tolist()) == {0, 1, 2, 3}
    z = a.info["z"]
    # the mixture: posterior means of each component sit near (+-2, +-2)
    for k, centre in enumerate([(2, 2), (2, -2), (-2, 2), (-2, -2)]):
        zk = z[:300][train.labels == k]
        assert torch.allclose(zk.mean(0), torch.tensor(centre, dtype=torch.float), atol=0.5)


def test_synthetic_sentences_depend_on_z(tmp_path):
    """W2 ~ U(-5, 5) makes the words strongly depend on the mixture component."""
    cfg = SyntheticDataset.Config(kind="synthetic", n_sentences=4000, n_train=3000, n_valid=500)
    train = SyntheticDataset(cfg).load(tmp_path).split("train")
    ids = train.flat.view(-1, 10)[:, 1:]  # the first word is uniform
    hist = torch.stack([torch.bincount(ids[train.labels == k].flatten() - 4, minlength=1000).float()
                        for k in range(4)])
    hist = hist / hist.sum(1, keepdim=True)
    tv = 0.5 * (hist[0] - hist[3]).abs().sum()
    assert tv > 0.5  # opposite corners produce clearly different word distributions
