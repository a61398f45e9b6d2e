"""Training and evaluation throughput of seqvae against plain-PyTorch loops and the FLOP floor, in one run.

Two models, both at batch 32 on PTB (10k words):

* ``ptb-suite``: the PTB suite's model (LSTM encoder and decoder 256, embedding 256, latent 32,
  decoder dropout 0.5 on the embeddings and before the vocabulary layer; Li et al. 2019);
* ``sentence-vae``: the Sentence-VAE model (GRU 256, embedding 300, latent 16, decoder embedding
  dropout 0.5, z into the initial state; Bowman et al. 2016 as its popular PyTorch port builds it).

For each, after a warm-up, it measures tokens/s (words + one ``<eos>`` per sentence) of

(a) a typical research loop, written the way the popular Sentence-VAE code does it: every sentence
    padded to a fixed length by the dataset, a ``DataLoader`` with the default collate, each batch
    sorted and packed with ``pack_padded_sequence``, ``log_softmax`` then ``NLLLoss``, fp32;
(b) a lean plain-PyTorch loop: the same model on length-bucketed padded batches, one fused
    ``cross_entropy``, in fp32 and under bf16 autocast (the fast precision);
(c) seqvae's own training path (Lightning, ``VAESystem``), in fp32 and in bf16-mixed;
(d) seqvae's model, batches and optimizer in a plain fp32 loop without Lightning (c_fp32 / d is
    Lightning's cost),

and prints c_fast / b_fp32, the model's training FLOPs per token (counted below) and the share of
the bf16 matmul peak measured in the same run. A breakdown of seqvae's fast step (recurrence,
vocabulary layer + cross-entropy, optimizer, data, the rest, Lightning) follows, each part timed on
its own on the same batches. Last, PTB-test IW-NLL with K importance samples on a slice of the test
split in fp32 and bf16: seconds, the nats between the two, and the time against the bf16 FLOP floor.

Usage (from the repository root; ``--page`` writes the markdown, ``--json`` the raw numbers)::

    python benchmarks/speed/speed.py --json out.json                 # about 15 min on 2 cores
    python benchmarks/speed/speed.py --steps 20 --warmup 3 --iw-sentences 16 --iw-samples 50   # a smoke run
    python benchmarks/speed/speed.py --device cuda --page benchmarks/speed/results-gpu.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

BATCH = 32
PAGE_ARGS = ("steps", "warmup", "rounds", "iw_samples", "iw_sentences", "device")  # the page's command line
LOOPS = ("a", "b_fp32", "b_fast", "d", "d_fast", "c_fp32", "c_fast")
MODELS = {
    "ptb-suite": {"cell": "lstm", "embed": 256, "hidden": 256, "latent": 32, "embed_dropout": 0.5,
                  "output_dropout": 0.5},
    "sentence-vae": {"cell": "gru", "embed": 300, "hidden": 256, "latent": 16, "embed_dropout": 0.5,
                     "output_dropout": 0.0},
}


# ------------------------------------------------------------------------------------ the machine


def matmul_peak(dtype: torch.dtype, device: str, n: int = 2048, seconds: float = 3.0) -> float:
    """Measured GFLOP/s of an ``n x n`` matmul in ``dtype`` (the best of repeated timings)."""
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(5):
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


def _autocast(device: str, fast: bool):
    return torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=torch.bfloat16, enabled=fast)


def timed_training(epoch, step, model: nn.Module, opt: torch.optim.Optimizer, steps: int, warmup: int,
                   device: str, clip=None) -> dict:
    """Train ``warmup + steps`` steps; tokens/s over the last ``steps``.

    ``epoch()`` yields one epoch of batches; ``step(batch, i)`` returns (loss, predicted tokens as a
    tensor). Every loop shares this part (zero_grad, backward, clip 5, optimizer step), so the
    loops differ only in their data and their model. Tokens are summed on the device: no per-step sync.
    ``clip(params)`` replaces ``clip_grad_norm_(params, 5)`` (loop (d) passes seqvae's own clipping).
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
            if clip is None:
                nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            else:
                clip(model.parameters())
            opt.step()
            if tokens is not None:
                tokens = tokens + n
            done += 1
            if done == warmup + steps:
                break
    _sync(device)
    return {"tokens_per_s": float(tokens) / (time.perf_counter() - start), "warmup_seconds": start - began}


def train_flops_per_token(spec: dict, vocab: int) -> float:
    """Training FLOPs per predicted token: 3 x forward (backward = 2 x forward) of the matmuls.

    Forward per token: encoder RNN ``2 G H (E + H)``, decoder RNN ``2 G H (E + H)``, vocabulary
    layer ``2 H V`` (G = 4 gates for an LSTM, 3 for a GRU). The per-sentence z layers are ignored
    (under 0.1 %). The encoder reads words only, so this slightly overcounts it (by 1 / length).
    """
    return 3.0 * (2 * _rnn_flops(spec) + 2 * spec["hidden"] * vocab)


def decoder_flops_per_token(spec: dict, vocab: int) -> float:
    """Forward FLOPs per token of the decoder alone (what each IW sample costs)."""
    return _rnn_flops(spec) + 2 * spec["hidden"] * vocab


def _rnn_flops(spec: dict) -> float:
    g = 4 if spec["cell"] == "lstm" else 3
    return 2 * g * spec["hidden"] * (spec["embed"] + spec["hidden"])


# ---------------------------------------------------------------------------------- loop (a)


class ResearchVAE(nn.Module):
    """The Sentence-VAE model as the popular research code writes it (packed RNNs, log_softmax + NLL)."""

    def __init__(self, spec: dict, vocab: int, pad: int):
        super().__init__()
        rnn = nn.LSTM if spec["cell"] == "lstm" else nn.GRU
        e, h, d = spec["embed"], spec["hidden"], spec["latent"]
        self.cell = spec["cell"]
        self.embedding = nn.Embedding(vocab, e, padding_idx=pad)
        self.embedding_dropout = nn.Dropout(spec["embed_dropout"])
        self.output_dropout = nn.Dropout(spec["output_dropout"])
        self.encoder = rnn(e, h, batch_first=True)
        self.decoder = rnn(e, h, batch_first=True)
        self.hidden2mean = nn.Linear(h, d)
        self.hidden2logv = nn.Linear(h, d)
        self.latent2hidden = nn.Linear(d, h)
        self.outputs2vocab = nn.Linear(h, vocab)

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
        out = self.output_dropout(out[reverse])
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


def loop_a(spec: dict, corpus, steps: int, warmup: int, device: str) -> dict:
    store, vocab = corpus.split("train"), corpus.vocab
    max_len = int(store.lengths.max()) + 1
    ds = PaddedSentences(store, vocab, max_len)
    loader = torch.utils.data.DataLoader(ds, batch_size=BATCH, shuffle=True)
    model = ResearchVAE(spec, len(vocab), vocab.pad_id).to(device)
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

    def __init__(self, spec: dict, vocab: int, pad: int):
        super().__init__()
        rnn = nn.LSTM if spec["cell"] == "lstm" else nn.GRU
        e, h, d = spec["embed"], spec["hidden"], spec["latent"]
        self.cell, self.pad = spec["cell"], pad
        self.embedding = nn.Embedding(vocab, e, padding_idx=pad)
        self.embedding_dropout = nn.Dropout(spec["embed_dropout"])
        self.output_dropout = nn.Dropout(spec["output_dropout"])
        self.encoder = rnn(e, h, batch_first=True)
        self.decoder = rnn(e, h, batch_first=True)
        self.to_params = nn.Linear(h, 2 * d)
        self.latent2hidden = nn.Linear(d, h)
        self.out = nn.Linear(h, vocab)

    def loss(self, tokens, lengths):
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        emb = self.embedding(inputs)
        # the encoder's last state must be the last real word's: pack it (cheap, enforce_sorted=False)
        _, h = self.encoder(pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False))
        h = (h[0] if self.cell == "lstm" else h)[-1]
        mean, logvar = self.to_params(h).float().chunk(2, dim=-1)
        z = mean + torch.randn_like(mean) * torch.exp(0.5 * logvar)
        h0 = self.latent2hidden(z).unsqueeze(0)
        state = (h0, torch.zeros_like(h0)) if self.cell == "lstm" else h0
        out, _ = self.decoder(self.embedding_dropout(emb), state)
        logits = self.out(self.output_dropout(out)).flatten(0, 1).float()
        rec = F.cross_entropy(logits, targets.flatten(), ignore_index=self.pad, reduction="sum")
        kl = -0.5 * torch.sum(1 + logvar - mean.pow(2) - logvar.exp())
        return (rec + kl) / tokens.size(0)


def loop_b(spec: dict, corpus, steps: int, warmup: int, device: str, fast: bool = False) -> dict:
    """The lean loop in fp32, or with ``fast`` under bf16 autocast (as Lightning's bf16-mixed does it)."""
    from seqvae.data.datamodule import bucket_plan

    store, vocab = corpus.split("train"), corpus.vocab
    model = LeanVAE(spec, len(vocab), vocab.pad_id).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(0)

    def step(idx: torch.Tensor, i: int):
        batch = store.batch(idx, vocab).to(device)
        with _autocast(device, fast):
            loss = model.loss(batch.tokens, batch.lengths)
        return loss, batch.lengths.sum()  # the encoder reads <bos> and the words

    return timed_training(lambda: bucket_plan(store.lengths, BATCH, 50, g), step, model, opt, steps, warmup, device)


# ---------------------------------------------------------------------------------- loop (c)


def seqvae_config(name: str, data_dir: Path, steps: int, precision: str, device: str) -> dict:
    """seqvae's config of model ``name``: the PTB suite's own, or the Sentence-VAE model."""
    from seqvae.bench.suites import suite_config

    spec = MODELS[name]
    train = {"max_steps": steps, "precision": precision, "log_every": 50, "checkpoint_every": None,
             "val_every": None, "accelerator": "gpu" if device.startswith("cuda") else "cpu"}
    if name == "ptb-suite":
        raw = suite_config("ptb")
        raw["data"]["dataset"]["data_dir"] = str(data_dir)
        raw["train"].update(train)
        return raw
    return {
        "data": {"dataset": {"kind": "ptb", "data_dir": str(data_dir)}, "batch_size": BATCH},
        "model": {"latent_dim": spec["latent"], "embed_dim": spec["embed"], "hidden_size": spec["hidden"]},
        "encoder": {"kind": spec["cell"]},
        "decoder": {"kind": spec["cell"], "z_injection": "init", "embed_dropout": spec["embed_dropout"],
                    "output_dropout": spec["output_dropout"]},
        "schedule": "constant",
        "train": train,
    }


def loop_c(name: str, corpus, data_dir: Path, steps: int, warmup: int, device: str, precision: str,
           batch: int = BATCH) -> dict:
    import lightning as L

    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.datamodule import TextDataModule
    from seqvae.training import VAESystem, quiet_lightning

    quiet_lightning()
    cfg = validate_experiment(seqvae_config(name, data_dir, warmup + steps, precision, device))
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

    dm = TextDataModule(corpus, batch, 64, cfg.data.bucket_factor, 0)
    trainer = L.Trainer(accelerator=cfg.train.accelerator, devices=1, precision=precision, max_steps=warmup + steps,
                        max_epochs=-1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0,
                        num_sanity_val_steps=0, callbacks=[Clock()])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.fit(system, datamodule=dm)
    tokens = marks["tokens_end"] - marks["tokens"]
    return {"tokens_per_s": tokens / (marks["end"] - marks["start"]), "model": model}


def _plain_setup(name: str, corpus, data_dir: Path, steps: int, device: str):
    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.datamodule import BucketedBatches
    from seqvae.training import adam

    cfg = validate_experiment(seqvae_config(name, data_dir, steps, "32-true", device))
    model = build_model(cfg, corpus.vocab).to(device)
    opt = adam(model.parameters(), 1e-3)  # seqvae's optimizer: loop (d) differs from (c) in Lightning only
    stream = BucketedBatches(corpus.split("train"), corpus.vocab, BATCH, cfg.data.bucket_factor, 0)
    return model, opt, stream


def loop_d(name: str, corpus, data_dir: Path, steps: int, warmup: int, device: str, prepare=None,
           fast: bool = False) -> dict:
    """seqvae's own model and batches in a plain loop without Lightning: c / d is Lightning's cost.

    ``prepare(model)``, when given, changes the model before training (compile_effect.py compiles parts of it).
    """
    from seqvae.training import clip_gradients

    model, opt, stream = _plain_setup(name, corpus, data_dir, warmup + steps, device)
    if prepare is not None:
        prepare(model)

    def step(batch, i: int):
        batch = batch.to(device)
        with _autocast(device, fast):
            loss = model(batch, step=i, total_steps=warmup + steps, beta=1.0).loss
        return loss, batch.lengths.sum()

    return timed_training(lambda: stream, step, model, opt, steps, warmup, device,
                          clip=lambda params: clip_gradients(opt, list(params), 5.0))


# ------------------------------------------------------------------------------ the breakdown


def breakdown(name: str, corpus, data_dir: Path, steps: int, device: str, fast: bool) -> dict:
    """Milliseconds per step of each part of seqvae's training step, each timed alone on the same batches.

    recurrence: embeddings, dropout, encoder and decoder RNNs, forward and backward (the features
    get a gradient of ones); vocabulary + CE: the fused vocabulary layer and cross-entropy on those
    features, forward and backward; optimizer: gradient clipping and the fused Adam step; data:
    making the batches; step: the whole plain-loop step (d); other: step minus the parts (the KL,
    the schedule, autograd's bookkeeping).
    """
    from seqvae.model import blocked_token_nll
    from seqvae.training import clip_gradients

    model, opt, stream = _plain_setup(name, corpus, data_dir, steps, device)
    pad = corpus.vocab.pad_id
    t = time.perf_counter()
    batches = []
    for b in stream:
        batches.append(b)
        if len(batches) == steps:
            break
    data_ms = (time.perf_counter() - t) / len(batches) * 1e3
    batches = [b.to(device) for b in batches]
    dec, layer = model.decoder, model.decoder.output_layer()
    params = list(model.parameters())

    def timed(fn) -> float:
        for b in batches[:3]:
            fn(b)
        _sync(device)
        t = time.perf_counter()
        for b in batches:
            fn(b)
        _sync(device)
        return (time.perf_counter() - t) / len(batches) * 1e3

    def recurrence(b):
        with _autocast(device, fast):
            post = model.encoder(b.targets, b.lengths)
            feats = dec.forward_features(b.inputs, post.mean, b.lengths)
        (feats.float().sum() + post.logvar.sum()).backward()

    features = {}
    with torch.no_grad(), _autocast(device, fast):
        for b in batches:
            features[id(b)] = dec.forward_features(b.inputs, model.encoder(b.targets, b.lengths).mean, b.lengths)

    def vocab_ce(b):
        feats = features[id(b)].detach().requires_grad_()
        with _autocast(device, fast):
            nll = blocked_token_nll(feats, layer, b.targets, pad)
        nll.sum().backward()

    def whole(b):
        with _autocast(device, fast):
            loss = model(b, step=0, total_steps=steps, beta=1.0).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        clip_gradients(opt, params, 5.0)
        opt.step()

    def optimizer(b):
        clip_gradients(opt, params, 5.0)
        opt.step()

    out = {"recurrence": timed(recurrence), "vocab_ce": timed(vocab_ce)}
    out["step"] = timed(whole)  # leaves gradients in place for the optimizer timing
    out["optimizer"] = timed(optimizer)
    out["data"] = data_ms
    out["other"] = out["step"] - out["recurrence"] - out["vocab_ce"] - out["optimizer"] - out["data"]
    out["tokens_per_step"] = sum(int(b.lengths.sum()) for b in batches) / len(batches)
    return out


def target_room(r: dict, peak_bf16: float, epoch_tokens: float) -> dict:
    """What the targets leave room for: milliseconds per step at the breakdown's tokens per step.

    ``need_*``: the step each target needs (c_fast / b_fp32 >= 3; 25 % of the bf16 peak; a PTB epoch
    in 60 s). ``bound``: the fast step's recurrence and optimizer as measured in the breakdown, plus
    the vocabulary layer's three products at the bf16 FLOP floor (the rest of that layer, the data,
    the KL and Lightning counted as free). A target whose step is below the bound cannot be met by
    anything but faster recurrent kernels or a cheaper optimizer step.
    """
    bd = r["breakdown_fast"]
    n = bd["tokens_per_step"]
    vocab_flops = r["train_flops_per_token"] - 3 * 2 * _rnn_flops(r["spec"])  # 3 x 2 H V per token
    room = {
        "tokens_per_step": n,
        "step": bd["step"],
        "recurrence_optimizer": bd["recurrence"] + bd["optimizer"],
        "vocab_floor": n * vocab_flops / (peak_bf16 * 1e9) * 1e3,
        "need_3x": n / (3 * r["b_fp32"]["tokens_per_s"]) * 1e3,
        "need_25pct": n * r["train_flops_per_token"] / (0.25 * peak_bf16 * 1e9) * 1e3,
        "need_60s_epoch": n * 60 / epoch_tokens * 1e3,
    }
    room["bound"] = room["recurrence_optimizer"] + room["vocab_floor"]
    return room


# ----------------------------------------------------------------------------------- IW-NLL


def time_iw(model, corpus, k: int, sentences: int, device: str, fast: bool) -> dict:
    """Seconds and mean IW-NLL with ``k`` samples on about ``sentences`` PTB test sentences.

    The sentences are evenly spaced batches of 64 of the length-sorted test split: the batches that
    ``seqvae eval`` makes, short and long ones alike. (A slice from the start of the split would put
    sentences of every length in one batch and pad far more than evaluation does.)
    """
    from seqvae.data.datamodule import eval_batches
    from seqvae.metrics import batch_generator, iw_log_likelihood

    every = eval_batches(corpus.split("test"), corpus.vocab, 64)
    m = max(1, min(len(every), round(sentences / 64)))
    picked = sorted({int((i + 0.5) * len(every) / m) for i in range(m)})
    batches = [every[i] for i in picked]
    n_tok = sum(int(b.lengths.sum()) for b in batches)
    model.eval().to(device)
    _sync(device)
    t = time.perf_counter()
    total = 0.0
    with torch.no_grad(), _autocast(device, fast):
        for i, b in zip(picked, batches):
            total -= float(iw_log_likelihood(model, b.to(device), k, generator=batch_generator(0, i, device)).sum())
    _sync(device)
    return {"seconds": time.perf_counter() - t, "tokens": n_tok, "sentences": sum(b.size for b in batches),
            "iw_nll": total / sum(b.size for b in batches)}


# ------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--device", default="cpu")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--steps", type=int, default=100, help="Timed steps per loop.")
    p.add_argument("--warmup", type=int, default=40, help="Untimed steps before them (oneDNN builds a kernel per new shape: warm them).")
    p.add_argument("--rounds", type=int, default=3, help="Each loop is timed once per round; medians are reported.")
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument("--iw-sentences", type=int, default=64, help="Test sentences the IW-NLL timing uses.")
    p.add_argument("--batch-sizes", type=int, nargs="*", default=[64, 128],
                   help="Also time loop (c) bf16 of the ptb-suite model at these batch sizes (once each, after the rounds).")
    p.add_argument("--page", type=Path, default=None, help="Write the results as markdown here.")
    p.add_argument("--json", type=Path, default=None, help="Write the raw numbers as JSON here.")
    p.add_argument("--from-json", type=Path, default=None,
                   help="Measure nothing: write --page from the JSON of an earlier run (its derived columns recomputed).")
    args = p.parse_args(argv)
    if args.from_json:
        return rerender(args)

    from seqvae.config import validate_experiment
    from seqvae.training import load_corpus

    torch.manual_seed(0)
    corpus = load_corpus(validate_experiment(seqvae_config("ptb-suite", args.data_dir, 1, "32-true", "cpu")).data.dataset)
    vocab = len(corpus.vocab)
    peak32 = matmul_peak(torch.float32, args.device)
    peak16 = matmul_peak(torch.bfloat16, args.device)
    machine = _machine(args.device)
    print(f"{machine}; matmul 2048^2: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s", flush=True)
    out = {"date": time.strftime("%Y-%m-%d"), "machine": machine, "torch": torch.__version__, "peak_fp32": peak32,
           "peak_bf16": peak16, "steps": args.steps, "warmup": args.warmup, "models": {},
           "args": {k: getattr(args, k) for k in PAGE_ARGS}}
    for name in args.models:
        spec = MODELS[name]
        flops = train_flops_per_token(spec, vocab)
        res: dict = {"spec": spec, "train_flops_per_token": flops}
        runs = {
            "a": lambda: loop_a(spec, corpus, args.steps, args.warmup, args.device),
            "b_fp32": lambda: loop_b(spec, corpus, args.steps, args.warmup, args.device),
            "b_fast": lambda: loop_b(spec, corpus, args.steps, args.warmup, args.device, fast=True),
            "d": lambda: loop_d(name, corpus, args.data_dir, args.steps, args.warmup, args.device),
            "d_fast": lambda: loop_d(name, corpus, args.data_dir, args.steps, args.warmup, args.device, fast=True),
            "c_fp32": lambda: loop_c(name, corpus, args.data_dir, args.steps, args.warmup, args.device, "32-true"),
            "c_fast": lambda: loop_c(name, corpus, args.data_dir, args.steps, args.warmup, args.device, "bf16-mixed"),
        }
        # rounds, each loop once per round in the same order: the machine's speed drifts by 10-20 % over
        # minutes, so each loop's median over the rounds is compared, and the spread is kept
        seen: dict[str, list[float]] = {k: [] for k in runs}
        model = None
        for _ in range(args.rounds):
            for key, run in runs.items():
                r = run()
                trained = r.pop("model", None)
                if key == "c_fp32":
                    model = trained  # the IW-NLL timing below uses the last fp32-trained model
                seen[key].append(r["tokens_per_s"])
        for key, values in seen.items():
            res[key] = {"tokens_per_s": statistics.median(values), "rounds": values}
        c32, c16 = res["c_fp32"], res["c_fast"]
        res["lightning_overhead"] = res["d"]["tokens_per_s"] / c32["tokens_per_s"] - 1
        res["lightning_overhead_fast"] = res["d_fast"]["tokens_per_s"] / c16["tokens_per_s"] - 1
        for key in LOOPS:
            res[key]["gflops"] = res[key]["tokens_per_s"] * flops / 1e9
        res["c_fast_over_b_fp32"] = c16["tokens_per_s"] / res["b_fp32"]["tokens_per_s"]
        if name == "ptb-suite" and args.batch_sizes:
            # a bigger batch is an option (--batch-size, --scale-lr), never the default: reported apart
            res["batch_scan"] = {}
            for size in args.batch_sizes:
                r = loop_c(name, corpus, args.data_dir, args.steps, args.warmup, args.device, "bf16-mixed", batch=size)
                r.pop("model", None)
                res["batch_scan"][str(size)] = {"tokens_per_s": r["tokens_per_s"],
                                                "over_b_fp32": r["tokens_per_s"] / res["b_fp32"]["tokens_per_s"]}
                print(f"{name}: c_fast at batch {size}: {r['tokens_per_s']:,.0f} tokens/s", flush=True)
        res["breakdown_fast"] = breakdown(name, corpus, args.data_dir, min(args.steps, 40), args.device, True)
        res["breakdown_fp32"] = breakdown(name, corpus, args.data_dir, min(args.steps, 40), args.device, False)
        full_tokens = int(corpus.split("test").lengths.sum())
        for prec, fast in (("fp32", False), ("bf16", True)):
            iw = time_iw(model, corpus, args.iw_samples, args.iw_sentences, args.device, fast)
            iw["flops"] = args.iw_samples * iw["tokens"] * decoder_flops_per_token(spec, vocab)
            iw["full_test_seconds_estimate"] = iw["seconds"] * full_tokens / iw["tokens"]
            res[f"iw_{prec}"] = iw
        res["iw_bf16_minus_fp32"] = res["iw_bf16"]["iw_nll"] - res["iw_fp32"]["iw_nll"]
        epoch_tokens = int(corpus.split("train").lengths.sum())
        res["ptb_epoch_seconds_fast"] = epoch_tokens / c16["tokens_per_s"]
        res["ptb_epoch_tokens"] = epoch_tokens
        out["models"][name] = res
        print(f"{name}: tokens/s " + " | ".join(f"{k} {res[k]['tokens_per_s']:,.0f}" for k in LOOPS), flush=True)
    # the peaks again at the end: a VM's matrix units can run at a different speed later in the run;
    # the shares of the peak use the higher of the two measurements (the harder target)
    end32, end16 = matmul_peak(torch.float32, args.device), matmul_peak(torch.bfloat16, args.device)
    out["peaks_at_end"] = {"fp32": end32, "bf16": end16}
    print(f"matmul 2048^2 at the end: fp32 {end32:.0f} GFLOP/s, bf16 {end16:.0f} GFLOP/s", flush=True)
    out["peak_fp32"], out["peak_bf16"] = max(peak32, end32), max(peak16, end16)
    for name, res in out["models"].items():
        for key in LOOPS:
            res[key]["of_fp32_peak"] = res[key]["gflops"] / out["peak_fp32"]
            res[key]["of_bf16_peak"] = res[key]["gflops"] / out["peak_bf16"]
        for prec in ("fp32", "bf16"):
            iw = res[f"iw_{prec}"]
            iw["floor_seconds_bf16"] = iw["flops"] / (out["peak_bf16"] * 1e9)
            iw["over_bf16_floor"] = iw["seconds"] / iw["floor_seconds_bf16"]
        res["room"] = target_room(res, out["peak_bf16"], res["ptb_epoch_tokens"])
        print(_summary(name, res), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    if args.page:
        args.page.write_text(render(out, args))
        print(f"wrote {args.page}")
    return 0


def rerender(args: argparse.Namespace) -> int:
    """Write ``--page`` from the JSON that ``--json`` wrote, with the room table recomputed."""
    try:
        out = json.loads(args.from_json.read_text())
    except (OSError, ValueError) as e:
        print(f"error: --from-json {args.from_json}: {e}", file=sys.stderr)
        return 2
    for key, value in out.get("args", {}).items():  # the page names the command that measured it
        setattr(args, key, value)
    for res in out["models"].values():
        # runs before the room table lack the epoch's token count: it is the epoch time x the fast rate
        tokens = res.get("ptb_epoch_tokens", res["ptb_epoch_seconds_fast"] * res["c_fast"]["tokens_per_s"])
        res["room"] = target_room(res, out["peak_bf16"], tokens)
    text = render(out, args)
    if args.page:
        args.page.write_text(text)
        print(f"wrote {args.page}")
    else:
        print(text)
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
        flags = Path("/proc/cpuinfo").read_text()
        if "amx_bf16" in flags:
            cpu += " (AMX bf16)"
        elif "avx512_bf16" in flags:
            cpu += " (AVX-512 bf16)"
    except OSError:
        pass
    return f"{cpu}, {torch.get_num_threads()} threads (os.cpu_count() = {os.cpu_count()})"


def _summary(name: str, r: dict) -> str:
    tps = {k: r[k]["tokens_per_s"] for k in LOOPS}
    bd = r["breakdown_fast"]
    return (f"{name}: tokens/s " + " | ".join(f"{k} {v:,.0f}" for k, v in tps.items())
            + f"; c_fast/b_fp32 {r['c_fast_over_b_fp32']:.2f}, {r['c_fast']['of_bf16_peak']:.1%} of the bf16 peak; "
            f"PTB epoch {r['ptb_epoch_seconds_fast']:.0f} s; step {bd['step']:.1f} ms = recurrence "
            f"{bd['recurrence']:.1f} + vocab/CE {bd['vocab_ce']:.1f} + optimizer {bd['optimizer']:.1f} + data "
            f"{bd['data']:.1f} + other {bd['other']:.1f}; Lightning {r['lightning_overhead_fast']:+.1%}; IW-NLL K: fp32 "
            f"{r['iw_fp32']['seconds']:.1f} s, bf16 {r['iw_bf16']['seconds']:.1f} s = "
            f"{r['iw_bf16']['over_bf16_floor']:.2f} x its bf16 floor, bf16 - fp32 {r['iw_bf16_minus_fp32']:+.3f} nats; "
            f"room: bound {r['room']['bound']:.1f} ms per step, 3x needs {r['room']['need_3x']:.1f}, 25 % needs "
            f"{r['room']['need_25pct']:.1f}")


def render(out: dict, args: argparse.Namespace) -> str:
    lines = [
        "# Speed: seqvae against plain PyTorch loops and the FLOP floor",
        "",
        f"Measured {out['date']} on {out['machine']}, torch {out['torch']}, with `python benchmarks/speed/speed.py"
        f" --steps {args.steps} --warmup {args.warmup} --rounds {args.rounds} --iw-samples {args.iw_samples}"
        f" --iw-sentences {args.iw_sentences}` (device `{args.device}`). All loops ran in the same process, one"
        " after the other.",
        "",
        f"Matmul peak (2048 x 2048, best of repeated timings, measured at the start and again at the end of the"
        f" run, the higher one used): fp32 **{out['peak_fp32']:.0f} GFLOP/s**, bf16 **{out['peak_bf16']:.0f} GFLOP/s**"
        f" (at the end: fp32 {out['peaks_at_end']['fp32']:.0f}, bf16 {out['peaks_at_end']['bf16']:.0f}).",
        "",
        "Models (batch 32, PTB, Adam, clip 5): `ptb-suite` = LSTM 256/256, latent 32, decoder dropout 0.5 in and out;",
        "`sentence-vae` = GRU 300/256, latent 16, decoder embedding dropout 0.5.",
        "Loops: (a) research loop (fixed-length padding, default collate, sort + pack, log_softmax + NLLLoss);",
        "(b) lean plain PyTorch (bucketed padded batches, fused cross_entropy), fp32 and bf16 autocast;",
        "(c) seqvae (Lightning), fp32 and bf16-mixed (the fast precision);",
        "(d) seqvae's model and batches in a plain loop (no Lightning), fp32 and bf16.",
        "",
        f"Tokens/s are the median of {args.rounds} rounds (each loop once per round, in the order below); the range",
        "column shows the lowest and highest round.",
        "",
        "| model | loop | tokens/s | range | GFLOP/s | of bf16 peak | / b fp32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    names = (("a", "(a) research"), ("b_fp32", "(b) lean fp32"), ("b_fast", "(b) lean bf16"),
             ("d", "(d) seqvae model, plain loop, fp32"), ("d_fast", "(d) seqvae model, plain loop, bf16"),
             ("c_fp32", "(c) seqvae fp32"), ("c_fast", "(c) seqvae bf16-mixed"))
    for name, r in out["models"].items():
        b = r["b_fp32"]["tokens_per_s"]
        for key, label in names:
            x = r[key]
            lines.append(f"| {name} | {label} | {x['tokens_per_s']:,.0f} | {min(x['rounds']):,.0f}-{max(x['rounds']):,.0f} | "
                         f"{x['gflops']:.1f} | {x['of_bf16_peak']:.1%} | {x['tokens_per_s'] / b:.2f} |")
    lines += ["", "Targets (issue: c_fast / b_fp32 >= 3 and >= 25 % of the bf16 peak; a PTB epoch of the suite model in"
              " <= 60 s):", ""]
    for name, r in out["models"].items():
        c = r["c_fast"]
        lines.append(f"- {name}: c_fast / b_fp32 = **{r['c_fast_over_b_fp32']:.2f}** "
                     f"({'met' if r['c_fast_over_b_fp32'] >= 3 else 'missed'}); "
                     f"{c['of_bf16_peak']:.1%} of the bf16 peak ({'met' if c['of_bf16_peak'] >= 0.25 else 'missed'}); "
                     f"a PTB epoch ({int(r['ptb_epoch_seconds_fast'] * c['tokens_per_s']):,} tokens) takes "
                     f"**{r['ptb_epoch_seconds_fast']:.0f} s** at this rate, evaluation not included"
                     + (f" ({'met' if r['ptb_epoch_seconds_fast'] <= 60 else 'missed'})" if name == "ptb-suite" else "")
                     + ".")
    scans = {n: r["batch_scan"] for n, r in out["models"].items() if r.get("batch_scan")}
    if scans:
        lines += ["", "Larger batches (`--batch-size N`, with `--scale-lr` if wanted; not the default and not what the",
                  "targets measure): loop (c) bf16-mixed, one timing each after the rounds, against (b) fp32 at batch 32.", "",
                  "| model | batch | tokens/s | / b fp32 (batch 32) | PTB epoch (s) |", "|---|---:|---:|---:|---:|"]
        for n, scan in scans.items():
            r = out["models"][n]
            epoch_tokens = r["ptb_epoch_seconds_fast"] * r["c_fast"]["tokens_per_s"]
            lines.append(f"| {n} | 32 | {r['c_fast']['tokens_per_s']:,.0f} | {r['c_fast_over_b_fp32']:.2f} | "
                         f"{r['ptb_epoch_seconds_fast']:.0f} |")
            for size, x in scan.items():
                lines.append(f"| {n} | {size} | {x['tokens_per_s']:,.0f} | {x['over_b_fp32']:.2f} | "
                             f"{epoch_tokens / x['tokens_per_s']:.0f} |")
    lines += ["", "Lightning's cost (loop (d) against (c), tokens/s, same precision): "
              + ", ".join(f"{c} {r['lightning_overhead']:+.1%} in fp32, {r['lightning_overhead_fast']:+.1%} in bf16"
                          for c, r in out["models"].items()) + ".",
              "", "Training FLOPs per token (3 x the forward matmuls): "
              + ", ".join(f"{c} {r['train_flops_per_token'] / 1e6:.2f} MFLOP" for c, r in out["models"].items()) + ".",
              "", "## Where a step's time goes", "",
              "Milliseconds per step, each part timed alone on the same batches (`breakdown()` in the script):",
              "recurrence = embeddings, dropout and both RNNs, forward and backward; vocabulary + CE = the fused",
              "vocabulary layer and cross-entropy, forward and backward; optimizer = clipping and the fused Adam",
              "step; data = making the batches; other = the whole plain-loop step minus those parts",
              "(negative when the parts, timed alone, lose cache warmth that the whole step keeps).", "",
              "| model | precision | tokens/step | step | recurrence | vocabulary + CE | optimizer | data | other |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in out["models"].items():
        for key, label in (("breakdown_fp32", "fp32"), ("breakdown_fast", "bf16")):
            bd = r[key]
            lines.append(f"| {name} | {label} | {bd['tokens_per_step']:.0f} | {bd['step']:.1f} | {bd['recurrence']:.1f} | "
                         f"{bd['vocab_ce']:.1f} | {bd['optimizer']:.1f} | {bd['data']:.1f} | {bd['other']:.1f} |")
    lines += ["", "## What the targets leave room for", "",
              "Milliseconds per bf16 step of the breakdown's batches: the step each target needs, against a lower",
              "bound that keeps the recurrence and the optimizer as measured above and puts the vocabulary layer's",
              "three products at the bf16 FLOP floor of this run's peak (the softmax, the data, the KL and Lightning",
              "free). A target whose step is below the bound is out of reach without faster recurrent kernels",
              "or a cheaper optimizer step (`target_room()` in the script).", "",
              "| model | step now | recurrence + optimizer | vocabulary products at the floor | bound | "
              "for c_fast / b_fp32 >= 3 | for 25 % of the bf16 peak | for a 60 s PTB epoch |",
              "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in out["models"].items():
        rm = r["room"]
        cell = {k: f"{rm[k]:.1f} ({'below' if rm[k] < rm['bound'] else 'above'} the bound)"
                for k in ("need_3x", "need_25pct", "need_60s_epoch")}
        lines.append(f"| {name} | {rm['step']:.1f} | {rm['recurrence_optimizer']:.1f} | {rm['vocab_floor']:.1f} | "
                     f"**{rm['bound']:.1f}** | {cell['need_3x']} | {cell['need_25pct']} | "
                     f"{cell['need_60s_epoch'] if name == 'ptb-suite' else '-'} |")
    lines += ["", "## IW-NLL", "",
              "On evenly spaced batches of 64 of the length-sorted test split (the batches `seqvae eval` makes), with",
              "the model trained by loop (c) fp32 (its few steps: the nats column compares precisions on the same",
              "model and the same samples, not a converged number). The full-test estimate scales by tokens.", "",
              "| model | precision | K | sentences | tokens | seconds | IW-NLL | bf16 FLOP floor (s) | x floor | full test, estimated (s) |",
              "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, r in out["models"].items():
        for prec in ("fp32", "bf16"):
            iw = r[f"iw_{prec}"]
            lines.append(f"| {name} | {prec} | {args.iw_samples} | {iw['sentences']} | {iw['tokens']:,} | "
                         f"{iw['seconds']:.1f} | {iw['iw_nll']:.3f} | {iw['floor_seconds_bf16']:.1f} | "
                         f"{iw['over_bf16_floor']:.2f} | {iw['full_test_seconds_estimate']:.0f} |")
    lines.append("")
    lines.append("bf16 - fp32 IW-NLL: " + ", ".join(f"{c} {r['iw_bf16_minus_fp32']:+.3f} nats"
                                                   for c, r in out["models"].items()) + ".")
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
