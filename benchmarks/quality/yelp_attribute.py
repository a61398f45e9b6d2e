"""Attribute vectors on Yelp sentiment (Shen et al. 2017 sentences): does adding one flip the sentiment?

1. Train a VAE on the dev split (``sentiment.dev.0`` negative, ``sentiment.dev.1`` positive; labels
   per file) with seqvae's own ``run_experiment``; evaluate it on the test split.
2. Train a bag-of-words logistic-regression sentiment classifier on the same dev sentences and report
   its accuracy on the test split (so its verdicts can be trusted as a measuring device).
3. The sentiment vector v = mean E_q[z] of positive dev sentences - that of negative ones.
4. For ``--n`` held-out test sentences of each polarity: decode the reconstruction (z = posterior
   mean) and the shifted sentence (z + s v toward the other polarity, for each scale s), and report
   how often the classifier calls them positive, the flip rate against the reconstruction, and the
   share of input words kept (content preservation).

Usage (from the repository root)::

    python benchmarks/quality/yelp_attribute.py                      # writes yelp-attribute.md here
    python benchmarks/quality/yelp_attribute.py --max-steps 500 --n 200 --page /tmp/y.md   # a quick look
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
import time
from pathlib import Path

import torch

from seqvae.run_dir import RunDir
from seqvae.bench.runner import finished_result
from seqvae.config import validate_experiment
from seqvae.generation import DecodeConfig, apply_attribute, attribute_vector, encode_sentences, reconstruct, words
from seqvae.training import load_checkpoint, load_corpus, run_experiment


def config(data_dir: Path, max_steps: int, seed: int) -> dict:
    files = {
        "train": [{"path": "sentiment.dev.0", "label": 0}, {"path": "sentiment.dev.1", "label": 1}],
        "test": [{"path": "sentiment.test.0", "label": 0}, {"path": "sentiment.test.1", "label": 1}],
    }
    return {
        "data": {"dataset": {"kind": "labeled-text", "data_dir": str(data_dir.resolve()), **files,
                             "label_names": ["negative", "positive"]},
                 "batch_size": 32, "eval_batch_size": 128},
        "model": {"latent_dim": 32, "embed_dim": 128, "hidden_size": 256},
        "decoder": {"kind": "lstm", "embed_dropout": 0.5, "output_dropout": 0.5},
        "schedule": "sigmoid",
        "regularizers": [{"kind": "word-dropout", "rate": 0.25}],
        "train": {"max_steps": max_steps, "lr": 1e-3, "grad_clip": 5.0, "seed": seed},
        "eval": {"iw_samples": 0},
    }


class BagOfWordsClassifier:
    """Logistic regression on binary bag-of-words features: logit = b + sum of the weights of the distinct words."""

    def __init__(self, vocab_size: int):
        self.bag = torch.nn.EmbeddingBag(vocab_size, 1, mode="sum")
        torch.nn.init.zeros_(self.bag.weight)
        self.b = torch.zeros((), requires_grad=True)

    @staticmethod
    def features(ids: list[list[int]], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(flat ids, offsets)`` of each sentence's distinct non-special words."""
        bags = [sorted({w for w in s if w >= 4}) for s in ids]
        offsets = torch.tensor([0] + [len(b) for b in bags[:-1]]).cumsum(0)
        return torch.tensor([w for b in bags for w in b], dtype=torch.long), offsets

    def logits(self, x: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        return self.bag(*x)[:, 0] + self.b

    def fit(self, ids: list[list[int]], y: torch.Tensor, epochs: int = 20, l2: float = 1e-5) -> None:
        params = [*self.bag.parameters(), self.b]
        opt = torch.optim.Adam(params, lr=0.05)
        v = self.bag.num_embeddings
        for epoch in range(epochs):
            for idx in torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch)).split(1024):
                x = self.features([ids[i] for i in idx.tolist()], v)
                opt.zero_grad()
                loss = torch.nn.functional.binary_cross_entropy_with_logits(self.logits(x), y[idx].float())
                (loss + l2 * self.bag.weight.pow(2).sum()).backward()
                opt.step()

    def positive(self, ids: list[list[int]]) -> torch.Tensor:
        with torch.no_grad():
            return self.logits(self.features(ids, self.bag.num_embeddings)) > 0


def _cell(text: str) -> str:
    """A markdown table cell (``<unk>``, ``_num_``, ``|`` and ``*`` kept literal)."""
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("_", "\\_"), ("*", "\\*")):
        text = text.replace(a, b)
    return text


def kept_words(src: list[int], out: list[int]) -> float:
    """Share of the input's distinct words that the output keeps."""
    a = set(src)
    return len(a & set(out)) / max(len(a), 1)


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "yelp_short_shen2017")
    p.add_argument("--max-steps", type=int, default=8000, help="Training steps (8,000 = 4 epochs of dev).")
    p.add_argument("--n", type=int, default=1000, help="Test sentences of each polarity to shift.")
    p.add_argument("--scales", type=float, nargs="*", default=[0.5, 1.0, 2.0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=root / "runs" / "yelp-attribute")
    p.add_argument("--page", type=Path, default=Path(__file__).with_name("yelp-attribute.md"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)

    cfg = validate_experiment(config(args.data_dir, args.max_steps, args.seed), source="yelp attribute config")
    corpus = load_corpus(cfg.data.dataset)
    result = finished_result(args.out, cfg)
    if result is None:
        logging.info("training %d steps into %s", cfg.train.max_steps, args.out)
        result = run_experiment(cfg, args.out, corpus=corpus)
    model, _, vocab = load_checkpoint(RunDir(args.out).checkpoint)
    model.eval()
    v = len(vocab)

    def split_ids(name: str, label: int) -> list[list[int]]:
        store = corpus.split(name)
        return [store.sentence(i) for i in range(len(store)) if int(store.labels[i]) == label]

    dev = {lab: split_ids("train", lab) for lab in (0, 1)}
    test = {lab: split_ids("test", lab) for lab in (0, 1)}
    start = time.perf_counter()
    clf = BagOfWordsClassifier(v)
    clf.fit(dev[0] + dev[1], torch.tensor([0] * len(dev[0]) + [1] * len(dev[1])))
    y_test = torch.tensor([0] * len(test[0]) + [1] * len(test[1]))
    acc = float((clf.positive(test[0] + test[1]).long() == y_test).float().mean())
    logging.info("classifier test accuracy %.3f", acc)

    def enc(ids: list[list[int]]):
        return encode_sentences([vocab.decode(s) for s in ids], vocab)

    vector = attribute_vector(model, enc(dev[1]), enc(dev[0]), vocab)
    dcfg = DecodeConfig(strategy="greedy", max_length=30)
    g = torch.Generator().manual_seed(args.seed)
    rows, examples = [], []
    for source, sign, name in ((0, 1.0, "negative -> positive"), (1, -1.0, "positive -> negative")):
        picked = torch.randperm(len(test[source]), generator=g)[: args.n].tolist()
        inputs = [test[source][i] for i in picked]
        text = enc(inputs)
        recon = reconstruct(model, text, vocab, dcfg)
        pos_rec = clf.positive(recon)
        pos_in = clf.positive(inputs)
        target = sign > 0
        rows.append((name, "input", None, float((pos_in == target).float().mean()), None,
                     1.0))
        rows.append((name, "reconstruction", 0.0, float((pos_rec == target).float().mean()), None,
                     sum(kept_words(a, b) for a, b in zip(inputs, recon)) / len(inputs)))
        for s in args.scales:
            shifted = apply_attribute(model, text, vocab, vector, sign * s, dcfg)
            pos_sh = clf.positive(shifted)
            flipped = float(((pos_sh == target) & (pos_rec != target)).float().sum() / max(int((pos_rec != target).sum()), 1))
            rows.append((name, f"z + {sign * s:+g} v", sign * s, float((pos_sh == target).float().mean()), flipped,
                         sum(kept_words(a, b) for a, b in zip(inputs, shifted)) / len(inputs)))
            if s == 1.0:
                examples += [(name, words(inputs[i], vocab), words(recon[i], vocab), words(shifted[i], vocab))
                             for i in range(4)]
    seconds = time.perf_counter() - start
    m = result["metrics"]
    lines = [
        "### Measured",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {torch.get_num_threads()} CPU threads, "
        f"written by `benchmarks/quality/yelp_attribute.py` (command: `python benchmarks/quality/yelp_attribute.py "
        f"--max-steps {args.max_steps} --n {args.n}`).",
        "",
        f"Model: LSTM VAE, embedding 128, LSTM 256/256, latent 32, decoder dropout 0.5, sigmoid annealing, word "
        f"dropout 0.25, {cfg.train.max_steps:,} steps of 32 sentences on the {len(dev[0]) + len(dev[1]):,} dev "
        f"sentences of Shen et al.'s Yelp data ({result['train_seconds']:.0f} s). On the {m['n_sentences']:,} test "
        f"sentences: -ELBO {m['neg_elbo']:.2f}, KL {m['kl']:.2f}, MI {m['mi']:.2f}, AU {m['au']}, shuffle gap "
        f"{m['shuffle_gap']:.2f} nats.",
        "",
        f"Measuring device: a bag-of-words logistic regression trained on the same dev sentences; accuracy on the "
        f"test sentences {acc:.3f}. Vector v = mean posterior mean of positive dev sentences minus that of negative "
        f"ones (norm {float(vector.norm()):.3f}). For {args.n} random test sentences of each polarity, greedy "
        "decoding from the posterior mean (reconstruction) and from z shifted toward the other polarity.",
        "",
        "| direction | decoded from | scale | classified as target | flipped (of reconstructions not yet target) | input words kept |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for name, what, s, frac, flip, kept in rows:
        lines.append(f"| {name} | {what} | {'-' if s is None else f'{s:+g}'} | {frac:.3f} | "
                     f"{'-' if flip is None else f'{flip:.3f}'} | {kept:.3f} |")
    lines += ["", "Examples (scale 1):", "", "| direction | input | reconstruction | shifted |", "|---|---|---|---|"]
    lines += [f"| {n} | {_cell(a)} | {_cell(b)} | {_cell(c)} |" for n, a, b, c in examples]
    lines += ["", f"Classifier, vector and decoding took {seconds:.0f} s."]
    args.page.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
