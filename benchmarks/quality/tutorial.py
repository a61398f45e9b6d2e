"""Produce the tutorial page "SequenceVAE on PTB": every figure and number comes from a seqvae command.

It runs, through the ``seqvae`` command line (so the commands shown are the commands run):

1. the PTB suite with beta = 1 from the start (``--schedule constant``): the KL collapses;
2. the same with sigmoid KL annealing: the KL rises, then settles;
3. sigmoid annealing with word dropout at rates k = 0.25, 0.5, 0.75 and 1.0 (historyless);
4. an interpolation between two sentences with the word-dropout 0.5 model.

and writes ``tutorial.md`` (included by docs/tutorial.md) and its figures into docs/assets/tutorial/.
A finished cell (its ``result.json``) is reused, so the script can be stopped and started again.

Usage (from the repository root)::

    python benchmarks/quality/tutorial.py                       # 2 epochs per run, K = 50
    python benchmarks/quality/tutorial.py --max-steps 200 --iw-samples 5 --out /tmp/t --page /tmp/t.md
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

from seqvae.run_dir import RunDir
from seqvae.plots import read_curves

RATES = [0.25, 0.5, 0.75, 1.0]
INTERPOLATE = ("the company said it expects to report a loss", "i do n't think it 's a good idea")


def seqvae(args: list[str]) -> dict | list:
    """Run ``seqvae ARGS --json`` and return its JSON output."""
    res = subprocess.run(["seqvae", *args, "--json"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"seqvae {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
    return json.loads(res.stdout)


def cell(out: Path, name: str, args: list[str]) -> tuple[dict, str]:
    """One bench cell in ``out/name``: reuse its result when present; returns (row, command shown)."""
    folder = out / name
    shown = "seqvae bench " + " ".join(shlex.quote(a) for a in args)
    done = list(folder.glob("*/result.json"))
    if done:
        return json.loads(done[0].read_text()), shown
    (row,) = seqvae(["bench", *args, "--out", str(folder), "--overwrite"])
    return row, shown


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--max-steps", type=int, default=2630, help="Steps per run (2,630 = 2 epochs of PTB).")
    p.add_argument("--iw-samples", type=int, default=50)
    p.add_argument("--out", type=Path, default=root / "runs" / "tutorial")
    p.add_argument("--page", type=Path, default=Path(__file__).with_name("tutorial.md"))
    p.add_argument("--assets", type=Path, default=root / "docs" / "assets" / "tutorial")
    args = p.parse_args(argv)
    args.assets.mkdir(parents=True, exist_ok=True)
    base = ["--suite", "ptb", "--data-dir", str(args.data_dir), "--max-steps", str(args.max_steps),
            "--iw-samples", str(args.iw_samples), "--set", "train.log_every=25"]
    runs = {"constant": cell(args.out, "constant", [*base, "--schedule", "constant"]),
            "sigmoid": cell(args.out, "sigmoid", [*base, "--schedule", "sigmoid"])}
    for k in RATES:
        reg = ["--regularizer", "historyless"] if k == 1.0 else [
            "--regularizer", "word-dropout", "--set", f"regularizers.0.rate={k}"]
        runs[f"k={k:g}"] = cell(args.out, f"wd-{k:g}", [*base, "--schedule", "sigmoid", *reg])

    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    curves = {name: read_curves(RunDir(row["run_dir"]).metrics_csv) for name, (row, _) in runs.items()}
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for name in ("constant", "sigmoid"):
        steps, kl = zip(*curves[name]["train/kl"])
        axes[0].plot(steps, kl, lw=1, label=f"--schedule {name}")
    axes[0].set(title="KL per sentence during training", xlabel="step", ylabel="nats (log scale)", yscale="log")
    axes[0].legend(fontsize=8)
    steps, beta = zip(*curves["sigmoid"]["train/beta"])
    axes[1].plot(steps, beta, lw=1, color="k", label="beta (sigmoid)")
    ax2 = axes[1].twinx()
    steps, kl = zip(*curves["sigmoid"]["train/kl"])
    ax2.plot(steps, kl, lw=1, color="C1", label="KL")
    axes[1].set(title="Sigmoid annealing: beta and the KL", xlabel="step", ylabel="beta")
    ax2.set_ylabel("KL (nats, log scale)")
    ax2.set_yscale("log")
    fig.tight_layout()
    fig.savefig(args.assets / "kl-collapse-vs-annealing.png", dpi=110)
    plt.close(fig)

    ks = [0.0, *RATES]
    rows_k = [runs["sigmoid"][0], *(runs[f"k={k:g}"][0] for k in RATES)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ks, [r["metrics"]["kl"] for r in rows_k], "o-", label="KL")
    ax.plot(ks, [r["metrics"]["rec"] - rows_k[0]["metrics"]["rec"] for r in rows_k], "s-",
            label="reconstruction minus k = 0")
    ax.set(xlabel="word dropout rate k", ylabel="nats per sentence", title="Word dropout: KL vs reconstruction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(args.assets / "word-dropout.png", dpi=110)
    plt.close(fig)

    interp_run = Path(runs["k=0.5"][0]["run_dir"])
    path = seqvae(["interpolate", str(interp_run), *INTERPOLATE, "--steps", "6"])["rows"]

    def metric_row(name: str, row: dict) -> str:
        m = row["metrics"]
        return (f"| {name} | {m['neg_elbo']:.2f} | {m.get('iw_nll', float('nan')):.2f} | {m['rec']:.2f} | "
                f"{m['kl']:.3f} | {m['mi']:.3f} | {m['au']} | {m['shuffle_gap']:.2f} | "
                f"{'yes' if m['collapsed'] else 'no'} |")

    rel = "assets/tutorial"
    lines = [
        f"Recorded {time.strftime('%Y-%m-%d')} by `benchmarks/quality/tutorial.py` ({args.max_steps:,} steps per run, "
        f"IW-NLL with K = {args.iw_samples}, PTB test split). The commands:",
        "",
        "```bash",
        *[cmd.replace(str(args.data_dir), "data/ptb") for _, (_, cmd) in runs.items()],
        "```",
        "",
        "**1. Without annealing the KL collapses; with sigmoid annealing it rises while beta is near 0, "
        "then falls as beta grows and settles above zero.**",
        "",
        f"![KL with beta = 1 from the start vs sigmoid annealing]({rel}/kl-collapse-vs-annealing.png)",
        "",
        "| run | -ELBO | IW-NLL | rec | KL | MI | AU | shuffle gap | collapsed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        metric_row("--schedule constant", runs["constant"][0]),
        metric_row("--schedule sigmoid", runs["sigmoid"][0]),
        "",
        "**2. Word dropout: the higher the rate k, the more the decoder must read z.**",
        "",
        f"![KL and reconstruction against the word dropout rate]({rel}/word-dropout.png)",
        "",
        "| word dropout k | -ELBO | IW-NLL | rec | KL | MI | AU | shuffle gap | collapsed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *[metric_row(f"{k:g}" + (" (historyless)" if k == 1.0 else ""), r) for k, r in zip(ks, rows_k)],
        "",
        "**3. An interpolation** with the k = 0.5 model:",
        "",
        "```bash",
        f"seqvae interpolate RUN {shlex.quote(INTERPOLATE[0])} {shlex.quote(INTERPOLATE[1])} --steps 6",
        "```",
        "",
        "| a | sentence |",
        "|---|---|",
        *[f"| {r['a']} | {r['sentence'].replace('<', '&lt;').replace('>', '&gt;')} |" for r in path],
        "",
    ]
    args.page.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
