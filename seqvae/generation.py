"""Decoding and the latent space: samples, reconstructions, interpolations, attribute vectors.

Every function takes a trained [`SequenceVAE`][seqvae.model.SequenceVAE] and works in ``eval()`` mode with
gradients off. Decoding is batched and stops at ``<eos>`` or ``max_length``; randomness comes only
from the ``generator`` passed in, so a fixed seed gives the same text.

Decoding strategies (``DecodeConfig``):

* ``greedy``: the most likely word at every step;
* ``sample``: ancestral sampling from softmax(logits / temperature);
* ``top-k``: sampling among the ``top_k`` most likely words;
* ``top-p``: nucleus sampling, the smallest set of words whose probability reaches ``top_p``;
* ``beam``: beam search of width ``beam_width``, hypotheses ranked by log p / length^alpha
  (``length_penalty`` = alpha; 0 = raw log-probability). Width 1 is greedy decoding.

``<pad>`` and ``<bos>`` are never produced.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from einops import rearrange, repeat
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from seqvae.data.vocab import Vocab
from seqvae.interfaces import Batch
from seqvae.model import SequenceVAE

__all__ = [
    "DecodeConfig",
    "EncodedText",
    "apply_attribute",
    "attribute_vector",
    "decode",
    "encode_sentences",
    "interpolate",
    "latent_means",
    "reconstruct",
    "sample_prior",
    "words",
]

DecodeMode = Literal["greedy", "sample", "top-k", "top-p", "beam"]


class DecodeConfig(BaseModel):
    """How to turn z into words (validated: a bad value is a one-line error)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: DecodeMode = Field("greedy", description="greedy, sample, top-k, top-p or beam (the --decode flag).")
    max_length: int = Field(50, ge=1, le=10_000, description="Most tokens per sentence, <eos> included.")
    temperature: float = Field(1.0, gt=0.0, description="Softmax temperature of the sampling strategies.")
    top_k: int = Field(10, ge=1, description="Words kept by top-k sampling.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Probability mass kept by nucleus (top-p) sampling.")
    beam_width: int = Field(5, ge=1, le=1000, description="Hypotheses kept by beam search.")
    length_penalty: float = Field(1.0, ge=0.0, description="Beam score = log p / length^alpha.")


@dataclass
class EncodedText:
    """User sentences as ids: ``ids`` (one list per sentence) and how many words became ``<unk>``."""

    sentences: list[str]
    ids: list[list[int]]
    unknown: int

    def batch(self, vocab: Vocab) -> Batch:
        """The sentences as a padded ``Batch`` (input order kept)."""
        from seqvae.data.corpus import TokenStore

        return TokenStore.from_lists(self.ids).batch(torch.arange(len(self.ids)), vocab)


def encode_sentences(
    sentences: Sequence[str | Sequence[str]], vocab: Vocab, tokenizer: str = "whitespace", lowercase: bool = False
) -> EncodedText:
    """Tokenise ``sentences`` as the corpus was and map them to ids; unknown words become ``<unk>``.

    A sentence may also be given already tokenised (a list of words).

    Raises:
        ValueError: an empty sentence (it has nothing to encode).
    """
    from seqvae.data.corpora import tokenize

    ids, unknown, texts = [], 0, []
    for i, s in enumerate(sentences):
        words = tokenize(s, tokenizer, lowercase) if isinstance(s, str) else list(s)  # type: ignore[arg-type]
        texts.append(s if isinstance(s, str) else " ".join(s))
        if not words:
            raise ValueError(f"sentence {i + 1} is empty")
        unknown += sum(1 for w in words if w not in vocab.stoi)
        ids.append(vocab.encode(words))
    return EncodedText(texts, ids, unknown)


def _banned(logits: Tensor, model: SequenceVAE) -> Tensor:
    logits = logits.float().clone()
    logits[:, model.ctx.pad_id] = float("-inf")
    logits[:, model.ctx.bos_id] = float("-inf")
    return logits


def _choose(logits: Tensor, cfg: DecodeConfig, generator: torch.Generator | None) -> Tensor:
    """Next word ``b`` from ``logits: b v`` for the greedy and sampling strategies."""
    if cfg.mode == "greedy":
        return logits.argmax(-1)
    logits = logits / cfg.temperature
    if cfg.mode == "top-k":
        k = min(cfg.top_k, logits.shape[-1])
        kth = logits.topk(k, dim=-1).values[:, -1:]  # b 1
        logits = logits.masked_fill(logits < kth, float("-inf"))
    elif cfg.mode == "top-p":
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(-1)
        before = probs.cumsum(-1) - probs  # mass of the words ranked above each word
        drop_sorted = before >= cfg.top_p  # the first word is always kept
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def decode(
    model: SequenceVAE, z: Tensor, cfg: DecodeConfig | None = None, generator: torch.Generator | None = None
) -> list[list[int]]:
    """Word ids decoded from each row of ``z: b d`` (without ``<bos>``/``<eos>``)."""
    cfg = cfg or DecodeConfig()
    was_training = model.training
    model.eval()
    try:
        if cfg.mode == "beam":
            return _beam(model, z, cfg)
        return _stepwise(model, z, cfg, generator)
    finally:
        model.train(was_training)


def _stepwise(model: SequenceVAE, z: Tensor, cfg: DecodeConfig, generator: torch.Generator | None) -> list[list[int]]:
    ctx, dec = model.ctx, model.decoder
    b = z.shape[0]
    state = dec.init_state(z)
    token = torch.full((b,), ctx.bos_id, dtype=torch.long, device=z.device)
    done = torch.zeros(b, dtype=torch.bool, device=z.device)
    steps = []
    for _ in range(cfg.max_length):
        logits, state = dec.step(token, state)  # b v
        token = _choose(_banned(logits, model), cfg, generator)
        token = torch.where(done, torch.full_like(token, ctx.eos_id), token)
        steps.append(token)
        done |= token == ctx.eos_id
        if bool(done.all()):
            break
    out = torch.stack(steps, 1).tolist()  # b t
    return [row[: row.index(ctx.eos_id)] if ctx.eos_id in row else row for row in out]


def _beam(model: SequenceVAE, z: Tensor, cfg: DecodeConfig) -> list[list[int]]:
    """Batched beam search: ``b`` sentences times ``w`` hypotheses decoded as ``(b w)`` rows."""
    ctx, dec = model.ctx, model.decoder
    b, w = z.shape[0], cfg.beam_width
    dev = z.device
    state = dec.init_state(repeat(z, "b d -> (b w) d", w=w))
    token = torch.full((b * w,), ctx.bos_id, dtype=torch.long, device=dev)
    scores = torch.full((b, w), float("-inf"), device=dev)
    scores[:, 0] = 0.0  # one live hypothesis at the start
    history = torch.zeros((b, w, 0), dtype=torch.long, device=dev)
    finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(b)]
    for t in range(cfg.max_length):
        logits, state = dec.step(token, state)  # (b w) v
        logp = rearrange(_banned(logits, model).log_softmax(-1), "(b w) v -> b w v", w=w)
        v = logp.shape[-1]
        total = rearrange(scores[..., None] + logp, "b w v -> b (w v)")
        top, idx = total.topk(min(2 * w, total.shape[-1]), dim=-1)  # b 2w
        beam, word = idx // v, idx % v
        new_scores = torch.full((b, w), float("-inf"), device=dev)
        new_beam = torch.zeros((b, w), dtype=torch.long, device=dev)
        new_word = torch.full((b, w), ctx.eos_id, dtype=torch.long, device=dev)
        norm = float(t + 1) ** cfg.length_penalty
        for i in range(b):
            if len(finished[i]) >= w:
                continue
            kept = 0
            for j in range(top.shape[1]):
                s = float(top[i, j])
                if s == float("-inf") or kept == w:
                    break
                if int(word[i, j]) == ctx.eos_id:
                    if len(finished[i]) < w:
                        finished[i].append((s / norm, history[i, int(beam[i, j])].tolist()))
                    continue
                new_scores[i, kept], new_beam[i, kept], new_word[i, kept] = s, beam[i, j], word[i, j]
                kept += 1
        if all(len(f) >= w for f in finished):
            break
        flat = (new_beam + torch.arange(b, device=dev)[:, None] * w).reshape(-1)  # (b w)
        state = dec.reorder_state(state, flat)
        history = torch.cat([history.reshape(b * w, -1)[flat].reshape(b, w, -1), new_word[..., None]], -1)
        scores, token = new_scores, new_word.reshape(-1)
    out = []
    norm = float(history.shape[-1]) ** cfg.length_penalty if history.shape[-1] else 1.0
    for i in range(b):
        cands = list(finished[i])
        if not cands:  # nothing ended within max_length: the best live hypothesis, unfinished
            cands = [(float(scores[i, k]) / norm, history[i, k].tolist()) for k in range(w)
                     if scores[i, k] > float("-inf")]
        out.append(max(cands, key=lambda c: c[0])[1])
    return out


@torch.no_grad()
def latent_means(model: SequenceVAE, text: EncodedText, vocab: Vocab, sample: bool = False,
                 generator: torch.Generator | None = None) -> Tensor:
    """z for each sentence: the posterior mean (default) or one sample of q(z|x). ``b d``."""
    was_training = model.training
    model.eval()
    try:
        post = model.encode(text.batch(vocab).to(next(model.parameters()).device))
        return post.rsample(generator=generator) if sample else post.mean
    finally:
        model.train(was_training)


def sample_prior(model: SequenceVAE, n: int, cfg: DecodeConfig | None = None,
                 generator: torch.Generator | None = None, *, seed: int | None = None) -> list[list[int]]:
    """``n`` sentences decoded from z ~ p(z).

    With ``seed``, sample ``i`` draws its z (and, for the sampling modes, its words) from its own
    generator seeded by ``(seed, i)``: sample ``i`` is the same whatever ``n`` is (``seqvae sample``
    uses this). Otherwise every draw comes from ``generator`` in turn.
    """
    cfg = cfg or DecodeConfig()
    if seed is None:
        with torch.no_grad():
            z = model.prior.sample(n, generator=generator)
        return decode(model, z, cfg, generator)
    from seqvae.metrics import batch_generator

    device = next(model.parameters()).device
    gens = [batch_generator(seed, i, device) for i in range(n)]
    with torch.no_grad():
        z = torch.cat([model.prior.sample(1, generator=g) for g in gens])  # n d
    if cfg.mode in ("greedy", "beam"):  # the words depend on z only: decode all rows at once
        return decode(model, z, cfg)
    return [decode(model, z[i : i + 1], cfg, gens[i])[0] for i in range(n)]


def reconstruct(model: SequenceVAE, text: EncodedText, vocab: Vocab, cfg: DecodeConfig | None = None,
                sample: bool = False, generator: torch.Generator | None = None) -> list[list[int]]:
    """Each sentence encoded (mean or sampled z) and decoded again."""
    return decode(model, latent_means(model, text, vocab, sample, generator), cfg, generator)


def interpolate(model: SequenceVAE, text: EncodedText, vocab: Vocab, steps: int = 8,
                cfg: DecodeConfig | None = None, generator: torch.Generator | None = None
                ) -> list[tuple[float, list[int]]]:
    """The homotopy between two sentences: z(a) = (1 - a) z_1 + a z_2 for ``steps`` values of a in [0, 1].

    z_1, z_2 are the posterior means, so a = 0 and a = 1 decode to the two reconstructions.
    """
    if len(text.ids) != 2:
        raise ValueError(f"interpolation needs exactly 2 sentences, got {len(text.ids)}")
    if steps < 2:
        raise ValueError(f"steps must be >= 2, got {steps}")
    z = latent_means(model, text, vocab)  # 2 d
    alphas = torch.linspace(0, 1, steps, device=z.device)
    path = (1 - alphas[:, None]) * z[0] + alphas[:, None] * z[1]  # steps d
    return list(zip([round(float(a), 6) for a in alphas], decode(model, path, cfg, generator)))


def attribute_vector(model: SequenceVAE, positive: EncodedText, negative: EncodedText, vocab: Vocab,
                     batch_size: int = 256) -> Tensor:
    """Mean posterior mean of ``positive`` minus that of ``negative``: ``d``."""

    def mean_z(text: EncodedText) -> Tensor:
        parts = [latent_means(model, EncodedText(text.sentences[i : i + batch_size], text.ids[i : i + batch_size], 0),
                              vocab) for i in range(0, len(text.ids), batch_size)]
        return torch.cat(parts).mean(0)

    return mean_z(positive) - mean_z(negative)


def apply_attribute(model: SequenceVAE, text: EncodedText, vocab: Vocab, vector: Tensor, scale: float = 1.0,
                    cfg: DecodeConfig | None = None, generator: torch.Generator | None = None) -> list[list[int]]:
    """Decode each sentence from z + scale * vector (z its posterior mean ``b d``, ``vector: d``)."""
    z = latent_means(model, text, vocab)
    return decode(model, z + scale * vector.to(z.device), cfg, generator)


def words(ids: list[int], vocab: Vocab) -> str:
    """Ids back to a space-joined string."""
    return " ".join(vocab.decode(ids))
