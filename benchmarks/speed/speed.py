"""Training and evaluation throughput of seqvae against two plain-PyTorch loops, in one run.

For the same model (PTB, embedding 300, hidden 256, latent 16, batch 32; GRU and LSTM) and the same
number of timed steps after a warm-up, it measures tokens/s of

(a) a typical research loop, written here the way the popular Sentence-VAE code does it: every
    sentence padded to a fixed length by the dataset, a ``DataLoader`` with the default collate and
    shuffling, each batch sorted by length and packed with ``pack_padded_sequence``, ``log_softmax``
    then ``NLLLoss``, fp32;
(b) a lean plain-PyTorch loop: the same math on length-bucketed padded batches, one fused
    ``cross_entropy``, fp32;
(c) seqvae's own training path (Lightning, ``VAESystem``), in fp32 and in bf16-mixed;
(d) seqvae's model, batches and optimizer in a plain loop without Lightning (c_fp32 against d is
    Lightning's cost);

Loops (a) and (b) use PyTorch's default Adam, as such code does; seqvae uses the fused Adam kernel
(the same update), which is part of what (c) and (d) gain over (b).

and prints the ratios c/a and c/b, the model's training FLOPs per token (counted below), and the
share of the measured matmul peak (fp32 and bf16) each loop reaches. It then times PTB-test IW-NLL
with K importance samples on a slice of the test split and compares it with its FLOP floor.
Tokens are predicted tokens: words plus one ``<eos>`` per sentence.

Usage (from the repository root; writes ``benchmarks/speed/results.md`` with ``--page``)::

    python benchmarks/speed/speed.py                          # about 10 min on 2 cores
    python benchmarks/speed/speed.py --steps 20 --warmup 3 --iw-sentences 16   # a smoke run
    python benchmarks/speed/speed.py --device cuda --page benchmarks/speed/results-gpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

EMBED, HIDDEN, LATENT, BATCH = 300, 256, 16, 32


# ------------------------------------------------------------------------------------ the machine


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 2.0) -> float:
    """Measured GFLOP/s of an ``n x n`` matmul in ``dtype`` (the best of repeated timings)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        _sync(device)
        t = time.perf_counter()
        for _ in range(5):
            a @ b
        _sync(device)
        best = max(best, 5 * 2 * n**3 / (time.perf_counter() - t) / 1e9)
    return best


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def timed_training(epoch, step, model: nn.Module, opt: torch.optim.Optimizer, steps: int, warmup: int,
                   device: str) -> dict:
    """Train ``warmup + steps`` steps; tokens/s over the last ``steps``.

    ``epoch()`` yields one epoch of batches; ``step(batch, i)`` returns (loss, predicted tokens as a
    tensor). Every loop shares this part (zero_grad, backward, clip 5, optimizer step), so the
    loops differ only in their data and their model. Tokens are summed on the device: no per-step sync.
    """
    tokens, start, done, began = None, None, 0, time.perf_counter()
    while done < warmup + steps:
        for batch in epoch():
            if done == warmup:
                _sync(device)
                start, tokens = time.perf_counter(), 0
            loss, n = step(batch, done)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            if tokens is not None:
                tokens = tokens + n
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return {"tokens_per_s": float(tokens) / (time.perf_counter() - start), "warmup_seconds": start - began}


def train_flops_per_token(cell: str, vocab: int) -> float:
    """Training FLOPs per predicted token: 3 x forward (backward = 2 x forward) of the matmuls.

    Forward per token: encoder RNN ``2 G H (E + H)``, decoder RNN ``2 G H (E + H)``, vocabulary
    layer ``2 H V`` (G = 4 gates for an LSTM, 3 for a GRU). The per-sentence z layers are ignored
    (under 0.1 %). The encoder reads words only, so this slightly overcounts it (by 1 / length).
    """
    g = 4 if cell == "lstm" else 3
    rnn = 2 * g * HIDDEN * (EMBED + HIDDEN)
    return 3.0 * (2 * rnn + 2 * HIDDEN * vocab)


def decoder_flops_per_token(cell: str, vocab: int) -> float:
    """Forward FLOPs per token of the decoder alone (what each IW sample costs)."""
    g = 4 if cell == "lstm" else 3
    return 2 * g * HIDDEN * (EMBED + HIDDEN) + 2 * HIDDEN * vocab


# ---------------------------------------------------------------------------------- loop (a)


class ResearchVAE(nn.Module):
    """The Sentence-VAE model as the popular research code writes it (packed RNNs, log_softmax + NLL)."""

    def __init__(self, cell: str, vocab: int, pad: int):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.cell = cell
        self.embedding = nn.Embedding(vocab, EMBED, padding_idx=pad)
        self.embedding_dropout = nn.Dropout(0.5)
        self.encoder = rnn(EMBED, HIDDEN, batch_first=True)
        self.decoder = rnn(EMBED, HIDDEN, batch_first=True)
        self.hidden2mean = nn.Linear(HIDDEN, LATENT)
        self.hidden2logv = nn.Linear(HIDDEN, LATENT)
        self.latent2hidden = nn.Linear(LATENT, HIDDEN)
        self.outputs2vocab = nn.Linear(HIDDEN, vocab)

    def forward(self, inputs, targets_len):
        lengths, order = torch.sort(targets_len, descending=True)
        inputs = inputs[order]
        emb = self.embedding(inputs)
        packed = pack_padded_sequence(emb, lengths.tolist(), batch_first=True)
        _, h = self.encoder(packed)
        h = (h[0] if self.cell == "lstm" else h).squeeze(0)
        mean, logv = self.hidden2mean(h), self.hidden2logv(h)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logv)
        h0 = self.latent2hidden(z).unsqueeze(0)
        state = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
        packed = pack_padded_sequence(self.embedding_dropout(emb), lengths.tolist(), batch_first=True)
        out, _ = self.decoder(packed, state)
        out, _ = pad_packed_sequence(out, batch_first=True)
        _, reverse = torch.sort(order)
        out = out[reverse]
        logp = F.log_softmax(self.outputs2vocab(out), dim=-1)
        return logp, mean, logv


class PaddedSentences(torch.utils.data.Dataset):
    """Each sentence padded to ``max_len`` by the dataset (``<bos> w.. `` in, ``w.. <eos>`` out)."""

    def __init__(self, store, vocab, max_len: int):
        self.items = []
        for i in range(len(store)):
            ids = store.sentence(i)[: max_len - 1]
            inp = [vocab.bos_id] + ids + [vocab.pad_id] * (max_len - 1 - len(ids))
            tgt = ids + [vocab.eos_id] + [vocab.pad_id] * (max_len - 1 - len(ids))
            self.items.append({"input": torch.tensor(inp), "target": torch.tensor(tgt),
                               "length": len(ids) + 1})

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def loop_a(cell: str, corpus, steps: int, warmup: int, device: str) -> dict:
    store, vocab = corpus.split("train"), corpus.vocab
    max_len = int(store.lengths.max()) + 1
    ds = PaddedSentences(store, vocab, max_len)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    model = ResearchVAE(cell, len(vocab), vocab.pad_id).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    nll = nn.NLLLoss(ignore_index=vocab.pad_id, reduction="sum")

    def step(batch: dict, i: int):
        inp, tgt, length = batch["input"].to(device), batch["target"].to(device), batch["length"].to(device)
        t = int(length.max())
        logp, mean, logv = model(inp[:, :t], length)
        rec = nll(logp.reshape(-1, logp.size(-1)), tgt[:, :t].reshape(-1))
        kl = -0.5 * torch.sum(1 + logv - mean.pow(2) - logv.exp())
        return (rec + kl) / inp.size(0), length.sum()

    return timed_training(lambda: loader, step, model, opt, steps, warmup, device)


# ---------------------------------------------------------------------------------- loop (b)


class LeanVAE(nn.Module):
    """The same model on padded batches, no packing in the decoder, one fused cross-entropy."""

    def __init__(self, cell: str, vocab: int, pad: int):
        super().__init__()
        rnn = nn.LSTM if cell == "lstm" else nn.GRU
        self.cell, self.pad = cell, pad
        self.embedding = nn.Embedding(vocab, EMBED, padding_idx=pad)
        self.embedding_dropout = nn.Dropout(0.5)
        self.encoder = rnn(EMBED, HIDDEN, batch_first=True)
        self.decoder = rnn(EMBED, HIDDEN, batch_first=True)
        self.to_params = nn.Linear(HIDDEN, 2 * LATENT)
        self.latent2hidden = nn.Linear(LATENT, HIDDEN)
        self.out = nn.Linear(HIDDEN, vocab)

    def loss(self, tokens, lengths):
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        emb = self.embedding(inputs)
        # the encoder's last state must be the last real word's: pack it (cheap, enforce_sorted=False)
        _, h = self.encoder(pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False))
        h = (h[0] if self.cell == "lstm" else h)[-1]
        mean, logvar = self.to_params(h).chunk(2, dim=-1)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        h0 = self.latent2hidden(z).unsqueeze(0)
        state = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
        out, _ = self.decoder(self.embedding_dropout(emb), state)
        rec = F.cross_entropy(self.out(out).flatten(0, 1), targets.flatten(), ignore_index=self.pad, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
        return (rec + kl) / tokens.size(0)


def loop_b(cell: str, corpus, steps: int, warmup: int, device: str) -> dict:
    from seqvae.data.datamodule import bucket_plan

    store, vocab = corpus.split("train"), corpus.vocab
    model = LeanVAE(cell, len(vocab), vocab.pad_id).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def step(idx: torch.Tensor, i: int):
        batch = store.batch(idx, vocab).to(device)
        return model.loss(batch.tokens, batch.lengths), batch.lengths.sum()  # the encoder reads <bos> and the words

    return timed_training(lambda: bucket_plan(store.lengths, BATCH, 50, g), step, model, opt, steps, warmup, device)


# ---------------------------------------------------------------------------------- loop (c)


def seqvae_config(cell: str, data_dir: Path, steps: int, precision: str, device: str) -> dict:
    return {
        "data": {"dataset": {"kind": "ptb", "data_dir": str(data_dir)}, "batch_size": BATCH},
        "model": {"latent_dim": LATENT, "embed_dim": EMBED, "hidden_size": HIDDEN},
        "encoder": {"kind": cell},
        "decoder": {"kind": cell, "z_injection": "init", "embed_dropout": 0.5},
        "schedule": "constant",
        "train": {"max_steps": steps, "precision": precision, "log_every": 50, "checkpoint_every": None,
                  "accelerator": "gpu" if device.startswith("cuda") else "cpu"},
    }


def loop_c(cell: str, corpus, data_dir: Path, steps: int, warmup: int, device: str, precision: str) -> dict:
    import lightning as L

    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.datamodule import TextDataModule
    from seqvae.training import VAESystem, quiet_lightning

    quiet_lightning()
    cfg = validate_experiment(seqvae_config(cell, data_dir, warmup + steps, precision, device))
    model = build_model(cfg, corpus.vocab)
    system = VAESystem(model, cfg)
    marks: dict[str, float] = {}

    class Clock(L.Callback):
        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if trainer.global_step == warmup:
                _sync(device)
                marks["start"], marks["tokens"] = time.perf_counter(), float(module.tokens_seen)

        def on_train_end(self, trainer, module):
            _sync(device)
            marks["end"], marks["tokens_end"] = time.perf_counter(), float(module.tokens_seen)

    dm = TextDataModule(corpus, BATCH, 64, cfg.data.bucket_factor, 0)
    trainer = L.Trainer(accelerator=cfg.train.accelerator, devices=1, precision=precision, max_steps=warmup + steps,
                        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[Clock()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(system, datamodule=dm)
    tokens = marks["tokens_end"] - marks["tokens"]
    return {"tokens_per_s": tokens / (marks["end"] - marks["start"]), "model": model}


def loop_d(cell: str, corpus, data_dir: Path, steps: int, warmup: int, device: str, prepare=None) -> dict:
    """seqvae's own model and batches in a plain loop without Lightning: c_fp32 / d is Lightning's cost.

    ``prepare(model)``, when given, changes the model before training (compile_effect.py compiles parts of it).
    """
    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.datamodule import BucketedBatches
    from seqvae.training import adam

    cfg = validate_experiment(seqvae_config(cell, data_dir, warmup + steps, "32-true", device))
    model = build_model(cfg, corpus.vocab).to(device)
    if prepare is not None:
        prepare(model)
    opt = adam(model.parameters(), 1e-3)  # seqvae's optimizer: loop (d) differs from (c) in Lightning only
    stream = BucketedBatches(corpus.split("train"), corpus.vocab, BATCH, cfg.data.bucket_factor, 0)

    def step(batch, i: int):
        batch = batch.to(device)
        return model(batch, step=i, total_steps=warmup + steps).loss, batch.lengths.sum()

    return timed_training(lambda: stream, step, model, opt, steps, warmup, device)


# ----------------------------------------------------------------------------------- IW-NLL


def time_iw(model, corpus, k: int, sentences: int, device: str) -> dict:
    """Seconds of IW-NLL with ``k`` samples on the first ``sentences`` of PTB test (eval batches of 64)."""
    from seqvae.data.corpus import TokenStore
    from seqvae.data.datamodule import eval_batches
    from seqvae.metrics import iw_log_likelihood

    store = corpus.split("test")
    n = min(sentences, len(store))
    batches = eval_batches(TokenStore(store.flat, store.offsets[:n], store.lengths[:n]), corpus.vocab, 64)
    n_tok = sum(int(b.lengths.sum()) for b in batches)
    model.eval().to(device)
    _sync(device)
    t = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            iw_log_likelihood(model, b.to(device), k)
    _sync(device)
    return {"seconds": time.perf_counter() - t, "tokens": n_tok, "sentences": sum(b.size for b in batches)}


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--device", default="cpu")
    p.add_argument("--cells", nargs="+", default=["gru", "lstm"], choices=["gru", "lstm"])
    p.add_argument("--steps", type=int, default=150, help="Timed steps per loop.")
    p.add_argument("--warmup", type=int, default=15, help="Untimed steps before them.")
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument("--iw-sentences", type=int, default=200, help="Test sentences the IW-NLL timing uses.")
    p.add_argument("--page", type=Path, default=None, help="Write the results as markdown here.")
    p.add_argument("--json", type=Path, default=None, help="Write the raw numbers as JSON here.")
    args = p.parse_args(argv)

    from seqvae.config import validate_experiment
    from seqvae.training import load_corpus

    torch.manual_seed(0)
    corpus = load_corpus(validate_experiment(seqvae_config("gru", args.data_dir, 1, "32-true", "cpu")).data.dataset)
    vocab = len(corpus.vocab)
    peak32 = matmul_peak(torch.float32, args.device)
    peak16 = matmul_peak(torch.bfloat16, args.device)
    print(f"matmul 2048^2: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s", flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": _machine(args.device), "peak_fp32": peak32,
           "peak_bf16": peak16, "steps": args.steps, "warmup": args.warmup, "cells": {}}
    for cell in args.cells:
        flops = train_flops_per_token(cell, vocab)
        res = {"train_flops_per_token": flops}
        res["a"] = loop_a(cell, corpus, args.steps, args.warmup, args.device)
        res["b"] = loop_b(cell, corpus, args.steps, args.warmup, args.device)
        res["d"] = loop_d(cell, corpus, args.data_dir, args.steps, args.warmup, args.device)
        c32 = loop_c(cell, corpus, args.data_dir, args.steps, args.warmup, args.device, "32-true")
        c16 = loop_c(cell, corpus, args.data_dir, args.steps, args.warmup, args.device, "bf16-mixed")
        model = c32.pop("model")
        c16.pop("model")
        res["c_fp32"], res["c_bf16"] = c32, c16
        res["lightning_overhead"] = res["d"]["tokens_per_s"] / c32["tokens_per_s"] - 1
        for key, peak in (("a", peak32), ("b", peak32), ("d", peak32), ("c_fp32", peak32), ("c_bf16", peak16)):
            r = res[key]
            r["gflops"] = r["tokens_per_s"] * flops / 1e9
            r["of_fp32_peak"] = r["gflops"] / peak32
            r["of_bf16_peak"] = r["gflops"] / peak16
        iw = time_iw(model, corpus, args.iw_samples, args.iw_sentences, args.device)
        iw_flops = args.iw_samples * iw["tokens"] * decoder_flops_per_token(cell, vocab)
        iw["floor_seconds"] = iw_flops / (peak32 * 1e9)
        iw["over_floor"] = iw["seconds"] / iw["floor_seconds"]
        full_tokens = int(corpus.split("test").lengths.sum())
        iw["full_test_seconds_estimate"] = iw["seconds"] * full_tokens / iw["tokens"]
        res["iw"] = iw
        out["cells"][cell] = res
        print(_summary(cell, res), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if args.page:
        args.page.write_text(render(out, args))
        print(f"wrote {args.page}")
    return 0


def _machine(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name()
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (os.cpu_count() = {os.cpu_count()})"


def _summary(cell: str, r: dict) -> str:
    a, b, d, c, c16 = (r[k]["tokens_per_s"] for k in ("a", "b", "d", "c_fp32", "c_bf16"))
    best = max(c, c16)
    return (f"{cell}: tokens/s a {a:,.0f} | b {b:,.0f} | d {d:,.0f} | c fp32 {c:,.0f} | c bf16 {c16:,.0f}; "
            f"best c/a {best / a:.2f}, c/b {best / b:.2f}; IW-NLL K: {r['iw']['seconds']:.1f} s on "
            f"{r['iw']['sentences']} sentences = {r['iw']['over_floor']:.2f} x its fp32 FLOP floor")


def render(out: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Speed: seqvae against plain PyTorch loops",
        "",
        f"Measured {out['date']} on {out['machine']} with `python benchmarks/speed/speed.py"
        f" --steps {args.steps} --warmup {args.warmup} --iw-samples {args.iw_samples}"
        f" --iw-sentences {args.iw_sentences}` (device `{args.device}`). All loops ran in the same process, one"
        " after the other.",
        "",
        f"Matmul peak (2048 x 2048, best of repeated timings): fp32 **{out['peak_fp32']:.0f} GFLOP/s**, "
        f"bf16 **{out['peak_bf16']:.0f} GFLOP/s**.",
        "",
        "Model: PTB (10k words), embedding 300, RNN 256 (encoder and decoder), latent 16, batch 32, Adam, clip 5.",
        "Loops: (a) research loop (fixed-length padding, default collate, sort + pack, log_softmax + NLLLoss);",
        "(b) lean plain PyTorch (bucketed padded batches, fused cross_entropy); (c) seqvae (Lightning);",
        "(d) seqvae's model and batches in a plain loop (no Lightning).",
        "",
        "| cell | loop | tokens/s | GFLOP/s | of fp32 peak | of bf16 peak | c / this |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for cell, r in out["cells"].items():
        best = max(r["c_fp32"]["tokens_per_s"], r["c_bf16"]["tokens_per_s"])
        for key, name in (("a", "(a) research"), ("b", "(b) lean"), ("d", "(d) seqvae model, plain loop"),
                          ("c_fp32", "(c) seqvae fp32"), ("c_bf16", "(c) seqvae bf16-mixed")):
            x = r[key]
            lines.append(f"| {cell} | {name} | {x['tokens_per_s']:,.0f} | {x['gflops']:.1f} | "
                         f"{x['of_fp32_peak']:.1%} | {x['of_bf16_peak']:.1%} | {best / x['tokens_per_s']:.2f} |")
    lines += ["", "Lightning's cost (loop (d), seqvae's model and batches without Lightning, against (c) fp32): "
              + ", ".join(f"{c} {r['lightning_overhead']:+.1%}" for c, r in out["cells"].items()) + ".",
              "", "Training FLOPs per token (3 x the forward matmuls): "
              + ", ".join(f"{c} {r['train_flops_per_token'] / 1e6:.2f} MFLOP" for c, r in out["cells"].items()) + ".",
              "", "## IW-NLL", "",
              "| cell | K | sentences | tokens | seconds | fp32 FLOP floor (s) | x floor | full test, estimated (s) |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for cell, r in out["cells"].items():
        iw = r["iw"]
        lines.append(f"| {cell} | {args.iw_samples} | {iw['sentences']} | {iw['tokens']:,} | {iw['seconds']:.1f} | "
                     f"{iw['floor_seconds']:.1f} | {iw['over_floor']:.2f} | {iw['full_test_seconds_estimate']:.0f} |")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
