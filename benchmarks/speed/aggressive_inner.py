"""How much faster are aggressive training's inner encoder updates with the decoder frozen?

While the aggressive phase lasts (He et al. 2019; ``seqvae/components/strategies/aggressive.py``),
every training step runs tens of encoder-only updates. Only the encoder's gradients are used
there, so the strategy turns off ``requires_grad`` outside the encoder for them: autograd then skips
the decoder's weight gradients (the vocabulary layer's weight product, the embedding gradient). This
script times the strategy's own ``before_step`` on the ``ptb-converged`` suite model, both ways,
alternating in one process:

    full      every parameter keeps its gradient (the inner loop as it was before the change)
    frozen    the strategy as it is: only the encoder's parameters need gradients

Each call runs exactly ``--inner`` updates (window = maximum, so the stopping rule never fires),
from the same weights and batches; printed: the machine, its matmul peaks, milliseconds per inner
update (median of the rounds) and the ratio, and the largest difference between the encoders the
two ways reach from the same start (the update must be the same).

Usage (from the repository root)::

    python benchmarks/speed/aggressive_inner.py                  # about 2 min on 2 cores
    OMP_NUM_THREADS=1 python benchmarks/speed/aggressive_inner.py --rounds 2 --inner 4   # a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the matmul peak and the machine line are shared with speed.py)


def setup(data_dir: Path, inner: int):
    from seqvae.bench.suites import suite_config
    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.datamodule import BucketedBatches
    from seqvae.training.system import build_strategy
    from seqvae.training import load_corpus

    raw = suite_config("ptb-converged")
    raw["data"]["dataset"]["data_dir"] = str(data_dir)
    raw["strategy"] = {"kind": "aggressive", "max_inner_steps": inner, "window": inner}
    cfg = validate_experiment(raw)
    corpus = load_corpus(cfg.data.dataset)
    torch.manual_seed(0)
    model = build_model(cfg, corpus.vocab)
    strat = build_strategy(cfg, model)
    strat._data = BucketedBatches(corpus.split("train"), corpus.vocab, cfg.data.batch_size, cfg.data.bucket_factor, 0)
    return cfg, model, strat


def timed_call(cfg, model, strat, freeze: bool, precision: str) -> tuple[float, torch.nn.Module]:
    """One ``before_step`` from a copy of ``model``; returns ms per inner update and the copy."""
    from seqvae.components.strategies import aggressive
    from seqvae.interfaces import TrainingContext

    m = copy.deepcopy(model)
    s = copy.deepcopy(strat)
    s._optimizer = torch.optim.SGD(m.encoder.parameters(), lr=1.0)
    real = aggressive._only_encoder_trainable
    if not freeze:
        aggressive._only_encoder_trainable = lambda _model: contextlib.nullcontext()
    try:
        torch.manual_seed(1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            t = time.perf_counter()
            s.before_step(TrainingContext(model=m, cfg=cfg, corpus=None), None, 0)
            seconds = time.perf_counter() - t
    finally:
        aggressive._only_encoder_trainable = real
    return seconds / s.inner_steps * 1e3, m


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--inner", type=int, default=30, help="Inner updates per timed call.")
    p.add_argument("--rounds", type=int, default=4, help="Each variant is timed once per round; medians are reported.")
    p.add_argument("--precision", choices=["bf16", "fp32"], default="bf16")
    args = p.parse_args(argv)

    cfg, model, strat = setup(args.data_dir, args.inner)
    peak32 = speed.matmul_peak(torch.float32, "cpu")
    peak16 = speed.matmul_peak(torch.bfloat16, "cpu")
    print(f"{speed._machine('cpu')}; matmul 2048^2: fp32 {peak32:.0f} GFLOP/s, bf16 {peak16:.0f} GFLOP/s", flush=True)
    timed_call(cfg, model, strat, True, args.precision)  # warm the kernels of both shapes
    timed_call(cfg, model, strat, False, args.precision)
    ms: dict[str, list[float]] = {"full": [], "frozen": []}
    reached = {}
    for r in range(args.rounds):
        for name in ms:
            t, reached[name] = timed_call(cfg, model, strat, name == "frozen", args.precision)
            ms[name].append(t)
        print(f"round {r + 1}: full {ms['full'][-1]:.1f} ms, frozen {ms['frozen'][-1]:.1f} ms per inner update", flush=True)
    full, frozen = statistics.median(ms["full"]), statistics.median(ms["frozen"])
    diff = max((a - b).abs().max().item() for a, b in zip(reached["full"].encoder.parameters(),
                                                          reached["frozen"].encoder.parameters()))
    print(f"ptb-converged model, {args.precision}, {args.inner} inner updates per call, medians of {args.rounds} rounds: "
          f"full {full:.1f} ms, frozen {frozen:.1f} ms per inner update; frozen / full = {frozen / full:.2f}; "
          f"largest difference between the two encoders: {diff:.2e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
