"""The posterior-collapse metrics, as He et al. 2019 define them.

* ``neg_elbo`` = -E_q[log p(x|z)] + KL(q(z|x) || p(z)) per sentence, one sample of z; ``elbo`` is its
  negation. ``rec`` is the reconstruction term, ``kl`` the KL (raw: free bits do not change it).
* ``ppl_elbo`` = exp(total -ELBO / total tokens), tokens = words + one ``<eos>`` per sentence. It is an
  upper bound on the true perplexity and is named so (the importance-weighted one comes separately).
* ``kl_estimator``: ``analytic`` or ``monte-carlo`` (priors without a closed-form KL, e.g. ``mog`` and
  ``vamp``: one sample of z per sentence, unbiased, averaged over the split).
* ``mi``: I(x;z) = E_x[E_q[log q(z|x)]] - E_z[log q(z)], with q(z) the mixture of the posteriors of
  one evaluation batch (``mi_batch_size`` sentences, 32 as in He et al.): bounded by log(batch size),
  noisy, and slightly negative near collapse. Averaged over batches weighted by their size.
* ``au``: number of dimensions with Var_x(E_q[z_d]) >= ``au_threshold`` (0.01), unbiased variance over
  the whole evaluation set.
* ``iw_nll`` (with ``iw_samples = K > 0``): -log (1/K) sum_k p(x, z_k) / q(z_k|x), z_k ~ q(z|x), per
  sentence; the number papers call NLL. It never exceeds -ELBO in expectation and tends to the true
  NLL as K grows. ``ppl_iw`` = exp(total IW-NLL / total tokens). The K samples go through the decoder
  as ``(k b)`` rows, in chunks that keep the logits under ``max_chunk_elements`` floats.
* ``shuffle_gap``: the rise in reconstruction NLL (nats/sentence) when each sentence is decoded from
  the z of another sentence of its batch (z rolled by one position): about 0 when the decoder
  ignores z.
* ``collapsed``: ``au == 0 or kl < collapse_kl`` (see ``COLLAPSE_RULE``); ``None`` for a model
  without latent (the language-model baseline), where collapse has no meaning.

For a model without latent (``latent_dim = 0``) -ELBO is the exact NLL; IW-NLL is then computed with
one sample (exact as well) whatever ``iw_samples`` says, and ``iw_samples`` reports 1.

Evaluation runs in ``eval()`` mode (no dropout, no input corruption) with a seeded generator.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from einops import rearrange, repeat
from torch import Tensor

from seqvae.interfaces import Batch, Posterior
from seqvae.model import SequenceVAE

log = logging.getLogger(__name__)

__all__ = [
    "COLLAPSE_RULE",
    "active_units",
    "batch_generator",
    "batch_mutual_information",
    "evaluate",
    "iw_log_likelihood",
    "mutual_information",
    "partial_progress",
]

COLLAPSE_RULE = "collapsed if AU == 0 or KL < {collapse_kl} nats/sentence"
NO_LATENT_RULE = "no latent (language-model baseline): collapse does not apply"


def batch_mutual_information(posterior: Posterior, z: Tensor) -> Tensor:
    """He et al.'s estimate of I(x;z) on one batch, given one sample ``z: b d`` per posterior."""
    b = z.shape[0]
    neg_entropy = -posterior.entropy().mean()
    log_q = posterior.pairwise_log_prob(z)  # i j: log q(z_i | x_j)
    log_qz = torch.logsumexp(log_q, dim=1) - math.log(b)  # i
    return neg_entropy - log_qz.mean()


def _mi_sum(post: Posterior, z: Tensor, mi_batch_size: int) -> Tensor:
    """Sum over the sentences of a batch (``z: b d``) of the batch-mixture MI, in groups of ``mi_batch_size``."""
    idx = torch.arange(z.shape[0], device=z.device)
    return sum(batch_mutual_information(post.select(i), z[i]).double() * len(i) for i in idx.split(mi_batch_size))


@torch.no_grad()
def mutual_information(
    model: SequenceVAE,
    batches: Iterable[Batch],
    *,
    seed: int = 0,
    mi_batch_size: int = 32,
    device: torch.device | str | None = None,
) -> float:
    """The batch-mixture MI (as in ``evaluate``) alone: the encoder only, no decoder pass.

    Used to decide when aggressive encoder training ends. Runs in eval mode and restores the mode.
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    g = torch.Generator(device=device).manual_seed(seed)
    total, n = 0.0, 0
    for batch in batches:
        post = model.encode(batch.to(device))
        z = post.rsample(generator=g)
        total += float(_mi_sum(post, z, mi_batch_size))
        n += batch.size
    model.train(was_training)
    return total / max(n, 1)


def active_units(means: Tensor, threshold: float = 0.01) -> tuple[int, Tensor]:
    """``(AU, variance per dim)`` from posterior means ``n d`` (unbiased variance over n)."""
    n, d = means.shape
    var = means.var(dim=0, unbiased=True) if n > 1 and d > 0 else torch.zeros(d)
    return int((var >= threshold).sum()), var


@torch.no_grad()
def iw_log_likelihood(
    model: SequenceVAE,
    batch: Batch,
    k: int,
    *,
    generator: torch.Generator | None = None,
    posterior: Posterior | None = None,
    max_chunk_elements: int = 2**26,
) -> Tensor:
    """Importance-weighted estimate of log p(x) per sentence, ``b``, with ``k`` samples of q(z|x).

    Samples are decoded ``c`` at a time as ``(c b)`` rows, ``c`` chosen so the logits (or, for a decoder
    with an ``output_layer``, whose vocabulary layer runs fused and blocked, eight features per hidden
    unit) hold at most ``max_chunk_elements`` numbers (64 Mi floats = 256 MiB by default).
    """
    if k < 1:
        raise ValueError(f"iw samples must be >= 1, got {k}")
    post = model.encode(batch) if posterior is None else posterior
    b, width = batch.inputs.shape
    fused = model.decoder.output_layer() is not None
    per_sample = max(1, b * width * (8 * model.ctx.hidden_size if fused else model.ctx.vocab_size))
    chunk = max(1, min(k, max_chunk_elements // per_sample))
    z_all = post.rsample(k, generator=generator)  # k b d: small; the decoder logits are what is chunked
    log_w = []
    for z in z_all.split(chunk):  # c b d
        c = z.shape[0]
        rows = Batch(repeat(batch.tokens, "b t -> (c b) t", c=c), repeat(batch.lengths, "b -> (c b)", c=c),
                     batch.pad_id)
        rec = rearrange(model.reconstruction_nll(rows, rearrange(z, "c b d -> (c b) d")), "(c b) -> c b", c=c)
        log_w.append(model.prior.log_prob(z) - rec - post.log_prob(z))  # c b
    return torch.logsumexp(torch.cat(log_w), dim=0) - math.log(k)  # b


def _load_partial(path: str | Path | None, key: str, device: Any) -> dict[str, Any]:
    """The running sums of an interrupted evaluation with the same ``key``, or fresh ones."""
    def zero() -> Tensor:
        return torch.zeros((), dtype=torch.float64, device=device)

    fresh = {"done": 0, "n": 0, "tokens": 0, "rec": zero(), "kl": zero(), "kl_dim": None, "mi": zero(), "iw": zero(),
             "shuffled": zero(), "means": [], "kl_analytic": True, "seconds": 0.0}
    if path is None or not Path(path).exists():
        return fresh
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # a torn or foreign file: start over
        return fresh
    if not isinstance(state, dict) or state.get("key") != key:
        return fresh
    return {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in state["acc"].items()}


def partial_progress(path: str | Path) -> tuple[int, int] | None:
    """``(batches done, batches in all)`` of the interrupted evaluation whose running sums ``evaluate``
    keeps in ``path``; None when there is no readable file (none yet, or one being written)."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        total = int(state["key"].split("|batches=", 1)[1].split("|", 1)[0])  # the key evaluate() builds
        return int(state["acc"]["done"]), total
    except Exception:
        return None


def _save_partial(path: str | Path, key: str, acc: dict[str, Any]) -> None:
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    state = {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in acc.items()}
    torch.save({"key": key, "acc": state}, tmp)
    tmp.replace(path)


def batch_generator(seed: int, index: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The generator that ``evaluate`` draws batch ``index``'s noise from (seeded by ``seed`` and ``index``)."""
    return torch.Generator(device=device).manual_seed(seed * 1_000_003 + index)


@torch.no_grad()
def evaluate(
    model: SequenceVAE,
    batches: Iterable[Batch],
    *,
    seed: int = 0,
    au_threshold: float = 0.01,
    collapse_kl: float = 0.1,
    mi_batch_size: int = 32,
    iw_samples: int = 0,
    device: torch.device | str | None = None,
    partial: str | Path | None = None,
    partial_key: str = "",
    stats: dict[str, Any] | None = None,
    progress_every: float | None = 60.0,
) -> dict[str, Any]:
    """Compute the metric set on ``batches`` (see the module docstring). Returns plain Python values.

    A long evaluation (IW-NLL with K = 500 on PTB takes minutes) logs a line every
    ``progress_every`` seconds: batches done, sentences, elapsed time and an estimate of the rest.

    Batch ``i`` draws its noise from a generator seeded with ``(seed, i)``, so the result does not
    depend on which batches ran in this call. With ``partial``, the running sums are saved there
    (atomically) after every batch, tagged with ``partial_key``; a later call with the same file and
    key skips the batches already done, so an interrupted long evaluation (K = 500) continues. The
    file is removed when the evaluation completes. ``stats``, when given, receives
    ``resumed_batches`` (batches taken from the file) and ``seconds`` (evaluation time summed over
    the calls that made this result).
    """
    was_training = model.training
    model.eval()
    device = device or next(model.parameters()).device
    has_latent = model.ctx.latent_dim > 0
    if not has_latent:
        iw_samples = min(iw_samples, 1)  # exact: every importance weight equals p(x)
    batches = list(batches)
    key = f"{partial_key}|seed={seed}|k={iw_samples}|batches={len(batches)}|mi={mi_batch_size}"
    acc = _load_partial(partial, key, device)
    resumed = acc["done"]
    kl_analytic = acc["kl_analytic"]
    began = last_line = time.perf_counter()
    for i, batch in enumerate(batches):
        if i < acc["done"]:
            continue
        now = time.perf_counter()
        if progress_every is not None and now - last_line >= progress_every and i > resumed:
            rate = (now - began) / (i - resumed)  # seconds per batch in this call
            log.info("evaluating: batch %d/%d (%d sentences), %.0f s so far, about %.0f s left%s", i, len(batches),
                     acc["n"], now - began, rate * (len(batches) - i),
                     f" (IW-NLL with K = {iw_samples})" if iw_samples > 1 else "")
            last_line = now
        started = time.perf_counter()
        g = batch_generator(seed, i, device)
        batch = batch.to(device)
        post = model.encode(batch)
        z = post.rsample(generator=g)
        rec = model.reconstruction_nll(batch, z)
        kl_out = model.prior.kl(post, g)
        kl_dim, kl_analytic = kl_out.per_dim, kl_analytic and kl_out.analytic
        acc["rec"] += rec.double().sum()
        acc["shuffled"] += model.reconstruction_nll(batch, torch.roll(z, 1, dims=0)).double().sum()
        if iw_samples:
            acc["iw"] -= iw_log_likelihood(model, batch, iw_samples, generator=g, posterior=post).double().sum()
        acc["kl"] += kl_dim.double().sum()
        acc["kl_dim"] = kl_dim.double().sum(0) if acc["kl_dim"] is None else acc["kl_dim"] + kl_dim.double().sum(0)
        acc["mi"] += _mi_sum(post, z, mi_batch_size)
        acc["means"].append(post.mean.float().cpu())
        acc["n"] += batch.size
        acc["tokens"] += int(batch.lengths.sum())
        acc["done"], acc["kl_analytic"] = i + 1, kl_analytic
        acc["seconds"] += time.perf_counter() - started
        if partial is not None and i + 1 < len(batches):
            _save_partial(partial, key, acc)
    if partial is not None:
        Path(partial).unlink(missing_ok=True)
    if stats is not None:
        stats.update(resumed_batches=resumed, seconds=acc["seconds"])
    rec_sum, kl_sum, kl_dim_sum, mi_sum = acc["rec"], acc["kl"], acc["kl_dim"], acc["mi"]
    iw_sum, shuffled_sum, n, tokens, means = acc["iw"], acc["shuffled"], acc["n"], acc["tokens"], acc["means"]
    model.train(was_training)
    if n == 0:
        raise ValueError("cannot evaluate on an empty split")
    au, var = active_units(torch.cat(means), au_threshold)
    rec_v, kl_v = float(rec_sum) / n, float(kl_sum) / n
    neg_elbo = rec_v + kl_v
    iw = {"iw_nll": float(iw_sum) / n, "ppl_iw": math.exp(float(iw_sum) / tokens), "iw_samples": iw_samples}
    return {
        "neg_elbo": neg_elbo,
        "elbo": -neg_elbo,
        "rec": rec_v,
        "kl": kl_v,
        "kl_per_dim": [float(x) / n for x in kl_dim_sum.cpu()],
        "kl_estimator": "analytic" if kl_analytic else "monte-carlo (one sample per sentence)",
        "ppl_elbo": math.exp(float(rec_sum + kl_sum) / tokens),
        "mi": float(mi_sum) / n,
        "au": au,
        "shuffle_gap": float(shuffled_sum) / n - rec_v,
        **(iw if iw_samples else {}),
        "mean_variance_per_dim": [float(x) for x in var],
        "n_sentences": n,
        "n_tokens": tokens,
        "collapsed": bool(au == 0 or kl_v < collapse_kl) if has_latent else None,
        "collapse_rule": COLLAPSE_RULE.format(collapse_kl=collapse_kl) if has_latent else NO_LATENT_RULE,
    }
