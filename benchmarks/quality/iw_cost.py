"""Wall time of IW-NLL with K samples on a run's test split, measured on every n-th sentence.

IW-NLL decodes each sentence K times, so its cost is linear in K and in the number of tokens. This
script times it on a systematic sample of the split (every ``--every``-th sentence of the
length-sorted split, so the length mix is kept) and prints the measured seconds and the time the
whole split takes at that rate (a projection, labelled as such). ``--every 1`` times the whole split.

    python benchmarks/quality/iw_cost.py runs/quality-ptb/sigmoid --iw-samples 500 --every 10
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from seqvae.run_dir import RunDir
from seqvae.data.datamodule import eval_batches
from seqvae.metrics import iw_log_likelihood
from seqvae.training import load_checkpoint, load_corpus


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run", type=Path, help="run folder (with checkpoint.pt) or checkpoint file")
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument("--every", type=int, default=10, help="time every n-th sentence (1 = all)")
    p.add_argument("--split", default="test")
    args = p.parse_args(argv)
    path = RunDir(args.run).checkpoint if args.run.is_dir() else args.run
    model, cfg, _ = load_checkpoint(path)
    model.eval()
    corpus = load_corpus(cfg.data.dataset)
    store = corpus.split(args.split)
    order = torch.argsort(store.lengths, stable=True)[:: args.every]
    sub_tokens = int(store.lengths[order].sum()) + len(order)
    from seqvae.data.corpus import TokenStore

    sub = TokenStore(store.flat, store.offsets[order], store.lengths[order])
    batches = eval_batches(sub, corpus.vocab, cfg.data.eval_batch_size)
    g = torch.Generator().manual_seed(cfg.train.seed)
    start = time.perf_counter()
    nll = 0.0
    with torch.no_grad():
        for batch in batches:
            nll -= float(iw_log_likelihood(model, batch, args.iw_samples, generator=g).double().sum())
    seconds = time.perf_counter() - start
    scale = store.num_tokens / sub_tokens
    print(json.dumps({
        "checkpoint": str(path), "split": args.split, "iw_samples": args.iw_samples,
        "sentences_timed": len(order), "tokens_timed": sub_tokens, "seconds": round(seconds, 1),
        "iw_nll_on_timed_sentences": round(nll / len(order), 3),
        "split_tokens": store.num_tokens, "projected_seconds_for_split": round(seconds * scale, 1),
        "threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
