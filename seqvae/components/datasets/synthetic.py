"""``synthetic``: the posterior-collapse benchmark data of He et al. 2019 ("Lagging inference networks").

Procedure (generated locally and deterministically from ``seed``):

1. z in R^2 from an equal mixture of 4 unit-variance Gaussians centred at (+-2, +-2); the component
   index is kept as the sentence label.
2. An untrained one-layer LSTM (embedding 100, hidden 100, vocabulary 1,000) with all weights drawn
   from U(-1, 1): its initial cell state is c0 = W z and hidden state h0 = tanh(c0), and z is
   concatenated to every input embedding.
3. logits_t = W1 h_t + W2 z with W2 drawn from U(-5, 5), so the sentence depends strongly on z.
4. The first token is uniform over the vocabulary; the next ``length - 1`` are sampled from the
   softmax, giving sentences of exactly ``length`` tokens.

Of the ``n_sentences`` (20,000), the first ``n_train`` are train, the next ``n_valid`` valid and
the rest test. The result is cached under ``<cache_dir>/synthetic/<hash>.pt``.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
from pydantic import Field, model_validator

from seqvae.config import ComponentConfig
from seqvae.data.corpus import Corpus, TokenStore
from seqvae.data.vocab import SPECIALS, Vocab
from seqvae.interfaces import DatasetBuilder

__all__ = ["SyntheticDataset", "generate_synthetic"]

log = logging.getLogger(__name__)
_FORMAT = 1  # bump when the generator changes, so old caches are not reused


def generate_synthetic(
    n: int, length: int, vocab_size: int, embed: int, hidden: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Generate ``(ids: n length, z: n 2, component: n)`` as described in the module docstring."""
    g = torch.Generator().manual_seed(seed)

    def uniform(*shape: int, scale: float = 1.0) -> torch.Tensor:
        return (torch.rand(shape, generator=g) * 2 - 1) * scale

    d = 2
    means = torch.tensor([[2.0, 2.0], [2.0, -2.0], [-2.0, 2.0], [-2.0, -2.0]])
    component = torch.randint(4, (n,), generator=g)
    z = means[component] + torch.randn((n, d), generator=g)
    emb = uniform(vocab_size, embed)
    w_x, w_h, bias = uniform(4 * hidden, embed + d), uniform(4 * hidden, hidden), uniform(4 * hidden)
    w_c0 = uniform(hidden, d)
    w1, b1, w2 = uniform(vocab_size, hidden), uniform(vocab_size), uniform(vocab_size, d, scale=5.0)

    c = z @ w_c0.T  # n h
    h = torch.tanh(c)
    z_logits = z @ w2.T + b1  # n v
    tok = torch.randint(vocab_size, (n,), generator=g)
    out = [tok]
    for _ in range(length - 1):  # data generation, not training: a loop over 9 positions
        gates = torch.cat([emb[tok], z], -1) @ w_x.T + h @ w_h.T + bias  # n 4h
        i, f, cand, o = gates.chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(cand)
        h = torch.sigmoid(o) * torch.tanh(c)
        probs = torch.softmax(h @ w1.T + z_logits, -1)
        tok = torch.multinomial(probs, 1, generator=g)[:, 0]
        out.append(tok)
    return torch.stack(out, 1), z, component


class SyntheticDataset(DatasetBuilder):
    """He et al. 2019's synthetic corpus (see the module docstring for the exact procedure)."""

    class Config(ComponentConfig):
        n_sentences: int = Field(20_000, ge=3, description="Sentences generated in total.")
        n_train: int = Field(16_000, ge=1, description="First n_train sentences form the train split.")
        n_valid: int = Field(2_000, ge=1, description="The next n_valid form valid; the rest test.")
        length: int = Field(10, ge=1, description="Tokens per sentence.")
        vocab_size: int = Field(1_000, ge=2, description="Words in the generator's vocabulary.")
        embed_dim: int = Field(100, ge=1, description="Generator LSTM embedding size.")
        hidden_size: int = Field(100, ge=1, description="Generator LSTM hidden size.")
        seed: int = Field(19950927, ge=0, description="Seed of the generator.")

        @model_validator(mode="after")
        def _splits_fit(self):
            if self.n_train + self.n_valid >= self.n_sentences:
                raise ValueError(
                    f"n_train + n_valid ({self.n_train + self.n_valid}) must be below "
                    f"n_sentences ({self.n_sentences}) to leave a test split"
                )
            return self

    def load(self, cache_dir: Path) -> Corpus:
        """Generate (or read from the cache) and split the corpus."""
        c = self.config
        params = c.model_dump(exclude={"kind", "n_train", "n_valid"})
        key = hashlib.sha256(json.dumps({**params, "format": _FORMAT}, sort_keys=True).encode()).hexdigest()
        path = Path(cache_dir) / "synthetic" / f"{key[:16]}.pt"
        data = None
        if path.exists():
            try:
                data = torch.load(path, weights_only=True)
            except Exception as exc:  # corrupt cache: regenerate
                log.warning("ignoring unreadable cache %s: %s", path, exc)
        if data is None:
            ids, z, comp = generate_synthetic(
                c.n_sentences, c.length, c.vocab_size, c.embed_dim, c.hidden_size, c.seed
            )
            data = {"ids": ids, "z": z, "component": comp}
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            torch.save(data, tmp)
            tmp.replace(path)
        vocab = Vocab([*SPECIALS, *(f"w{i}" for i in range(c.vocab_size))])
        ids = data["ids"] + len(SPECIALS)
        cuts = {"train": (0, c.n_train), "valid": (c.n_train, c.n_train + c.n_valid),
                "test": (c.n_train + c.n_valid, c.n_sentences)}
        splits = {
            name: TokenStore.from_matrix(ids[a:b], labels=data["component"][a:b]) for name, (a, b) in cuts.items()
        }
        return Corpus(vocab, splits, info={"latent": "z", "z": data["z"]})
