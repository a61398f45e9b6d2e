"""Does ``torch.compile`` speed up seqvae's training step? Eager against compiled, in one run.

For each model of ``speed.py`` (the PTB suite's LSTM and the Sentence-VAE GRU, batch 32) it trains
seqvae's model in the plain loop (d) of ``speed.py`` three times, each from the same seed:

    eager           no compilation (timed first and again last: the difference is the drift)
    decoder         ``torch.compile(model.decoder, dynamic=True)``: embedding and RNN (the vocabulary
                    layer and the cross-entropy run fused outside it, ``seqvae.fused_ce``)

Whole-model compilation is not a variant: Dynamo cannot trace the reparameterised sample (``randn``
with a symbolic shape and a generator argument), so it would be the decoder variant plus graph
breaks. Printed: tokens/s over the timed steps, the ratio to eager, and the first-call cost
(compilation included) as the wall time of the warm-up steps; Inductor caches compiled kernels
on disk, so a second run on the same machine compiles less.

Usage (from the repository root)::

    python benchmarks/speed/compile_effect.py                   # about 3 min on 2 cores
    python benchmarks/speed/compile_effect.py --models ptb-suite --steps 20 --warmup 3   # a smoke run
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import speed  # noqa: E402  (the model, loop (d) and the timing helper are shared with speed.py)

VARIANTS = ["eager", "decoder", "eager again"]


def run(variant: str, name: str, corpus, data_dir: Path, steps: int, warmup: int) -> dict:
    """Loop (d) of speed.py from seed 0, with the part that ``variant`` names compiled."""

    def prepare(model) -> None:
        if variant == "decoder":
            model.decoder = torch.compile(model.decoder, dynamic=True)

    torch.manual_seed(0)
    torch._dynamo.reset()
    return speed.loop_d(name, corpus, data_dir, steps, warmup, "cpu", prepare=prepare)


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--models", nargs="+", default=list(speed.MODELS), choices=list(speed.MODELS))
    p.add_argument("--steps", type=int, default=100, help="Timed steps per variant.")
    p.add_argument("--warmup", type=int, default=15, help="Untimed steps before them (compilation happens here).")
    p.add_argument("--page", type=Path, default=None, help="Write the table as markdown here.")
    args = p.parse_args(argv)

    from seqvae.config import validate_experiment
    from seqvae.training import load_corpus

    corpus = load_corpus(validate_experiment(speed.seqvae_config("ptb-suite", args.data_dir, 1, "32-true", "cpu")).data.dataset)
    lines = [
        f"`torch.compile` against eager on {speed._machine('cpu')}, torch {torch.__version__}, measured "
        f"{time.strftime('%Y-%m-%d')} with `python benchmarks/speed/compile_effect.py --steps {args.steps} "
        f"--warmup {args.warmup}` (seqvae's model in a plain fp32 loop, {args.steps} timed steps after "
        f"{args.warmup} warm-up steps).",
        "",
        "| model | variant | tokens/s | / eager | warm-up s (compilation included) |",
        "|---|---|---:|---:|---:|",
    ]
    for name in args.models:
        eager = None
        for variant in VARIANTS:
            r = run(variant, name, corpus, args.data_dir, args.steps, args.warmup)
            eager = eager or r["tokens_per_s"]
            row = (f"| {name} | {variant} | {r['tokens_per_s']:,.0f} | {r['tokens_per_s'] / eager:.2f} | "
                   f"{r['warmup_seconds']:.1f} |")
            print(row, flush=True)
            lines.append(row)
    page = "\n".join(lines) + "\n"
    if args.page:
        args.page.write_text(page)
        print(f"wrote {args.page}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
