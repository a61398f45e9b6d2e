"""How much do sparse embedding gradients save an SGD training step?

With ``train.optimizer: sgd`` (the ``ptb-converged`` recipe) the training system gives the encoder's
and the decoder's embeddings sparse gradients (``seqvae.training.sparse_embedding_gradients``) and
``RowSparseSGD`` updates only the rows a batch holds. A dense embedding gradient costs, per table
and step, a zero-filled 10,002 x 256 table, the rows added into it, its norm for clipping and its
update; a batch of 32 PTB sentences touches a few hundred rows. This script times both ways,
alternating in one process, from the same weights and on the same batches:

    dense     every gradient dense: PyTorch's fused SGD, clipping folded into it (the step as it was)
    sparse    the embeddings' gradients sparse: RowSparseSGD (the step as it is)

Two measurements on the ``ptb-converged`` suite model, bf16 autocast as the PTB rows train:
the whole training step (forward, backward, clipping at 5, the SGD step) and one of aggressive
training's inner encoder updates (where the encoder's embedding is most of what is updated).
Printed: the machine, its matmul peaks, milliseconds per step (median of the rounds) each way, the
ratio per round and of the medians, and the largest parameter difference after one step from the
same start (the update must be the same, to float32 rounding).

Usage (from the repository root)::

    python benchmarks/speed/sparse_embeddings.py                       # about 3 min on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/speed/sparse_embeddings.py --threads 1
    python benchmarks/speed/sparse_embeddings.py --rounds 2 --steps 3  # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the matmul peak and the machine line are shared with speed.py)


def setup(data_dir: Path, n_batches: int):
    from seqvae.bench.suites import suite_config
    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.datamodule import BucketedBatches
    from seqvae.training import load_corpus

    raw = suite_config("ptb-converged")
    raw["data"]["dataset"]["data_dir"] = str(data_dir)
    cfg = validate_experiment(raw)
    corpus = load_corpus(cfg.data.dataset)
    torch.manual_seed(0)
    model = build_model(cfg, corpus.vocab)
    batches = []
    for b in BucketedBatches(corpus.split("train"), corpus.vocab, cfg.data.batch_size, cfg.data.bucket_factor, 0):
        batches.append(b)
        if len(batches) == n_batches:
            break
    return cfg, model, batches


def trainer(model: torch.nn.Module, sparse: bool, clip: float, encoder_only: bool = False):
    """A training step ``step(batch, i)`` on ``model`` (changed in place), dense or sparse embeddings."""
    from seqvae.components.strategies.aggressive import _only_encoder_trainable
    from seqvae.training import clip_gradients, sgd, sparse_embedding_gradients
    from seqvae.training.system import cached_autocast

    if sparse:
        sparse_embedding_gradients(model)
    trained = model.encoder if encoder_only else model
    params = list(trained.parameters())
    opt = sgd(params, 1.0)
    cpu = torch.device("cpu")

    def step(batch, i: int) -> None:
        torch.manual_seed(i)  # the same dropout masks both ways
        with torch.autocast("cpu", dtype=torch.bfloat16, cache_enabled=False), cached_autocast(cpu):
            if encoder_only:
                with _only_encoder_trainable(model):
                    loss = model(batch, step=i, total_steps=1000, beta=1.0).loss
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
            else:
                loss = model(batch, step=i, total_steps=1000, beta=1.0).loss
                opt.zero_grad(set_to_none=True)
                loss.backward()
        clip_gradients(opt, params, clip)
        opt.step()

    return step


def compare(model, batches, rounds: int, steps: int, encoder_only: bool) -> dict:
    ways = {name: (copy.deepcopy(model), name == "sparse") for name in ("dense", "sparse")}
    steppers = {name: trainer(m, sparse, 5.0, encoder_only) for name, (m, sparse) in ways.items()}
    # one step from the same start: the same update both ways
    for name, step in steppers.items():
        step(batches[0], 0)
    (_, (a, _)), (_, (b, _)) = ways.items()
    with torch.no_grad():
        diff = max(float((pa - pb).abs().max()) for pa, pb in zip(a.parameters(), b.parameters()))
    seen: dict[str, list[float]] = {name: [] for name in steppers}
    for r in range(rounds):
        for name, step in steppers.items():
            t = time.perf_counter()
            for i in range(steps):
                step(batches[(r * steps + i) % len(batches)], 1 + r * steps + i)
            seen[name].append((time.perf_counter() - t) / steps * 1e3)
    med = {name: statistics.median(v) for name, v in seen.items()}
    return {"ms": med, "rounds": seen, "ratio": med["sparse"] / med["dense"],
            "round_ratios": [s / d for d, s in zip(seen["dense"], seen["sparse"])], "max_param_diff": diff}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data-dir", type=Path, default=Path(__file__).resolve().parents[3] / "shared" / "data" / "ptb")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own choice)")
    p.add_argument("--rounds", type=int, default=6)
    p.add_argument("--steps", type=int, default=15, help="steps per round and way")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    peak32, peak16 = speed.matmul_peak(torch.float32, "cpu"), speed.matmul_peak(torch.bfloat16, "cpu")
    print(f"{speed._machine('cpu')}; matmul 2048^2: fp32 {peak32:.0f}, "
          f"bf16 {peak16:.0f} GFLOP/s")
    cfg, model, batches = setup(args.data_dir, 30)
    tokens = statistics.mean(int(b.lengths.sum()) for b in batches)
    print(f"ptb-converged model, batch {cfg.data.batch_size} ({tokens:.0f} tokens per step on average), bf16 autocast, "
          f"SGD lr 1, clip 5; {args.rounds} alternating rounds of {args.steps} steps each way")
    for label, encoder_only in (("training step", False), ("aggressive inner update", True)):
        r = compare(model, batches, args.rounds, args.steps, encoder_only)
        print(f"{label}: dense {r['ms']['dense']:.1f} ms, sparse {r['ms']['sparse']:.1f} ms, "
              f"sparse / dense {r['ratio']:.3f} (rounds {', '.join(f'{x:.2f}' for x in r['round_ratios'])}); "
              f"largest parameter difference after one step {r['max_param_diff']:.2g}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
