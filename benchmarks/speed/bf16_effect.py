"""Does ``--precision bf16-mixed`` change the metrics? fp32 and bf16 runs of the same grid, several seeds.

It runs ``seqvae bench`` (default: the synthetic suite, seeds 0-2) once in fp32 and once in
bf16-mixed, then prints each metric's mean and seed-to-seed standard deviation in both, the
difference of the means, and that difference in units of the fp32 standard deviation (within
noise: |difference| below about 2 standard errors of a difference of means). Wall times are printed
too. Only training runs in bf16: the evaluation (IW-NLL included) is always fp32, so the table
measures what bf16 training does to the model.

Usage (from the repository root)::

    python benchmarks/speed/bf16_effect.py                       # about 15 min on 2 cores
    python benchmarks/speed/bf16_effect.py --suite synthetic --seeds 0 1 --max-steps 200 --out /tmp/bf16
    python benchmarks/speed/bf16_effect.py --suite ptb --data-dir ../shared/data/ptb --schedule sigmoid \
        --regularizer word-dropout --max-steps 660 --iw-samples 10 --seeds 0 1 --page benchmarks/speed/bf16-effect-ptb.md

Options it does not know (``--schedule``, ``--data-dir``, ``--iw-samples`` ...) go to ``seqvae bench``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import time
from pathlib import Path

METRICS = ["neg_elbo", "iw_nll", "rec", "kl", "mi", "au"]


def run(suite: str, seeds: list[int], precision: str, out: Path, extra: list[str]) -> tuple[list[dict], float]:
    cmd = ["seqvae", "bench", "--suite", suite, "--precision", precision, "--out", str(out), "--overwrite", "--json",
           *[a for s in seeds for a in ("--seed", str(s))], *extra]
    start = time.perf_counter()
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{res.stderr[-2000:]}")
    return json.loads(res.stdout), time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", default="synthetic")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--out", type=Path, default=Path("runs/bf16-effect"))
    p.add_argument("--page", type=Path, default=None, help="Write the table as markdown here.")
    args, passed = p.parse_known_args(argv)  # any other option goes to `seqvae bench` as it is
    extra = (["--max-steps", str(args.max_steps)] if args.max_steps else []) + passed
    rows, secs = {}, {}
    for precision in ("32-true", "bf16-mixed"):
        rows[precision], secs[precision] = run(args.suite, args.seeds, precision, args.out / precision, extra)
    n = len(args.seeds)
    lines = [
        f"fp32 vs bf16-mixed on the `{args.suite}` suite, seeds {', '.join(map(str, args.seeds))} "
        f"(`python benchmarks/speed/bf16_effect.py --suite {args.suite} --seeds {' '.join(map(str, args.seeds))}"
        + (f" --max-steps {args.max_steps}" if args.max_steps else "") + "".join(f" {a}" for a in passed)
        + "`). Wall time of the whole grid: "
        f"fp32 {secs['32-true']:.0f} s, bf16-mixed {secs['bf16-mixed']:.0f} s.",
        "",
        "| metric | fp32 mean ± sd | bf16 mean ± sd | bf16 − fp32 | in fp32 sd |",
        "|---|---:|---:|---:|---:|",
    ]
    for m in METRICS:
        a = [r["metrics"][m] for r in rows["32-true"]]
        b = [r["metrics"][m] for r in rows["bf16-mixed"]]
        sa = statistics.stdev(a) if n > 1 else float("nan")
        sb = statistics.stdev(b) if n > 1 else float("nan")
        d = statistics.fmean(b) - statistics.fmean(a)
        in_sd = f"{d / sa:+.2f}" if sa > 0 else "—"
        lines.append(f"| {m} | {statistics.fmean(a):.3f} ± {sa:.3f} | {statistics.fmean(b):.3f} ± {sb:.3f} | "
                     f"{d:+.3f} | {in_sd} |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.page:
        args.page.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
