"""What freezing the non-encoder parameters saves in the aggressive strategy's inner encoder updates.

``aggressive`` (He et al. 2019) runs up to 100 encoder-only updates per training step while its
phase lasts, so its inner loop is where an aggressive run spends its time. Inside the loop only the
encoder learns; the strategy switches ``requires_grad`` off for every other parameter so that the
backward pass skips their weight gradients (the gradient still flows through the decoder to z).

For the PTB suite's model (embedding 256, LSTM 256, latent 32, the PTB vocabulary, batch 32 of real
training sentences) this script times the inner loop both ways, alternating (frozen, unfrozen,
frozen, ...) so that drift on a shared machine hits both alike, and prints seconds per inner update
and the ratio, all measured in this one run.

Usage (from the repository root)::

    python benchmarks/speed/aggressive_inner.py                  # about 2 min on 2 cores
    python benchmarks/speed/aggressive_inner.py --updates 10 --rounds 1   # a smoke run
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path
from types import SimpleNamespace

import torch


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--updates", type=int, default=30, help="Inner updates per timed round.")
    p.add_argument("--rounds", type=int, default=3, help="Timed rounds of each variant (alternating).")
    p.add_argument("--page", type=Path, default=None, help="Write the result as markdown here.")
    args = p.parse_args(argv)

    from seqvae.bench.suites import suite_config
    from seqvae.composer import build_model
    from seqvae.config import validate_experiment
    from seqvae.data.datamodule import BucketedBatches
    from seqvae.training import load_corpus

    raw = suite_config("ptb")
    raw["data"]["dataset"] = {"kind": "ptb", "data_dir": str(args.data_dir.resolve())}
    # the window never ends the loop early, so every round runs exactly --updates inner updates
    raw["strategy"] = {"kind": "aggressive", "max_inner_steps": args.updates, "window": args.updates + 1}
    cfg = validate_experiment(raw)
    corpus = load_corpus(cfg.data.dataset)
    torch.manual_seed(0)
    model = build_model(cfg, corpus.vocab).train()
    from seqvae.registry import get_registry

    strat = get_registry("strategy").get("aggressive")(cfg.strategy)
    strat._data = BucketedBatches(corpus.split("train"), corpus.vocab, cfg.data.batch_size, cfg.data.bucket_factor, 1)
    strat._optimizer = torch.optim.SGD(model.encoder.parameters(), lr=1.0)
    system = SimpleNamespace(model=model, cfg=cfg, device=torch.device("cpu"))
    batch = next(iter(strat._data))

    def frozen() -> None:  # the strategy as it runs: non-encoder parameters frozen
        strat.before_step(system, batch, 0)

    def unfrozen() -> None:  # the same loop with every parameter asking for its gradient
        strat._inner_loop(system, 0, 1.0)
        model.zero_grad(set_to_none=True)

    def timed(fn) -> float:
        start = strat.inner_steps
        t = time.perf_counter()
        fn()
        assert strat.inner_steps - start == args.updates
        return (time.perf_counter() - t) / args.updates

    timed(unfrozen)  # warm-up
    times: dict[str, list[float]] = {"frozen": [], "unfrozen": []}
    for _ in range(args.rounds):
        times["frozen"].append(timed(frozen))
        times["unfrozen"].append(timed(unfrozen))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["unfrozen"] / med["frozen"]
    lines = [
        "# Aggressive strategy: inner encoder updates with the other parameters frozen",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} on {platform.machine()} with {torch.get_num_threads()} CPU "
        f"thread{'' if torch.get_num_threads() == 1 else 's'}, torch {torch.__version__}, by `benchmarks/speed/aggressive_inner.py` "
        f"({args.rounds} alternating rounds of {args.updates} inner updates each; medians). Model: the `ptb` "
        "suite's (embedding 256, LSTM 256, latent 32, vocabulary of "
        f"{len(corpus.vocab):,}, batch {cfg.data.batch_size} of PTB training sentences).",
        "",
        "| variant | s per inner update |",
        "|---|---:|",
        f"| every parameter asks for its gradient | {med['unfrozen']:.3f} |",
        f"| non-encoder parameters frozen (what `aggressive` does) | {med['frozen']:.3f} |",
        "",
        f"Frozen is {ratio:.2f}x as fast. Every round (s per inner update): frozen "
        f"{', '.join(f'{t:.3f}' for t in times['frozen'])}; unfrozen {', '.join(f'{t:.3f}' for t in times['unfrozen'])}.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.page:
        args.page.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
