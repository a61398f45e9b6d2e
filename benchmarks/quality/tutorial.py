"""Produce the tutorial walk-through: the Sentence VAE story on PTB, one real command and its real output per step.

It runs, through the ``seqvae`` command line (the commands shown are the commands run, their output is
what they printed):

1. the PTB suite with beta = 1 from the start (``--schedule constant``): the KL collapses;
2. the same with sigmoid KL annealing: the KL rises, then settles above zero;
3. sigmoid annealing plus word dropout 0.5, and k = 1.0 (historyless; ``--rates`` adds more);
4. ``seqvae sample``, 5. ``seqvae reconstruct``, 6. ``seqvae interpolate`` with the word-dropout model;
7. ``seqvae attribute``: a "negation" vector (PTB sentences with "n't" minus sentences without).

and writes ``tutorial.md`` (included by docs/tutorial.md) and its figures into docs/assets/tutorial/.
A finished training (its ``result.json``) is reused with the output it printed, so the script can be
stopped and started again; the generation steps always run again (seconds).

Usage (from the repository root)::

    python benchmarks/quality/tutorial.py                  # one epoch of PTB per training, IW K = 20
    python benchmarks/quality/tutorial.py --max-steps 200 --iw-samples 5 --out /tmp/t --page /tmp/t.md --assets /tmp/t
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

from seqvae.plots import read_curves
from seqvae.run_dir import RunDir

RATES = [0.5, 1.0]  # word dropout rates trained (0.5 is the model of steps 4-7; 1.0 is historyless)
RECONSTRUCT = ["the company said it expects to report a loss", "i do n't think it 's a good idea",
               "the stock market fell sharply on friday"]
INTERPOLATE = ("the company said it expects to report a loss", "i do n't think it 's a good idea")
APPLY = ["the company said it expects to report a loss", "the market is a good place to invest"]
COLUMNS = 88  # the terminal width the outputs are recorded at
OUTPUT = "tutorial-output.txt"  # what a training's command printed, kept in its --out folder


class Shell:
    """Runs ``seqvae`` commands, records each one as shown (paths relative, data as ``data/ptb``) and its output."""

    def __init__(self, data_dir: Path, out: Path):
        self.data_dir, self.out = data_dir, out

    def show(self, args: list[str]) -> str:
        return self.paths(" ".join(shlex.quote(a) for a in args))

    def paths(self, text: str) -> str:
        """``text`` with the paths as a reader of the page has them (``data/ptb``, ``runs/tutorial``)."""
        return text.replace(str(self.data_dir), "data/ptb").replace(str(self.out), "runs/tutorial")

    def run(self, args: list[str]) -> tuple[str, float]:
        """``seqvae ARGS``: (stdout, seconds). Fails with the command's stderr tail."""
        env = {**os.environ, "COLUMNS": str(COLUMNS)}
        start = time.perf_counter()
        res = subprocess.run(["seqvae", *args], capture_output=True, text=True, check=False, env=env)
        if res.returncode != 0:
            raise SystemExit(f"seqvae {' '.join(args)} failed ({res.returncode}):\n{res.stderr[-2000:]}")
        return self.paths(res.stdout.rstrip()) + "\n", time.perf_counter() - start


def train(shell: Shell, name: str, args: list[str]) -> dict:
    """One ``seqvae bench`` into ``out/name`` (reused when finished): its row, command shown, output, seconds."""
    folder = shell.out / name
    cmd = ["bench", *args, "--out", str(folder)]
    done = sorted(folder.glob("*/result.json"))
    if done and (folder / OUTPUT).exists():
        row = json.loads(done[0].read_text())
        return {"row": row, "cmd": shell.show(["seqvae", *cmd]), "output": (folder / OUTPUT).read_text(),
                "seconds": row["train_seconds"] + row["eval_seconds"]}
    output, seconds = shell.run([*cmd, "--overwrite"])
    (folder / OUTPUT).write_text(output)
    (row_file,) = folder.glob("*/result.json")
    return {"row": json.loads(row_file.read_text()), "cmd": shell.show(["seqvae", *cmd]), "output": output,
            "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--max-steps", type=int, default=1315, help="Steps per training (1,315 = 1 epoch of PTB).")
    p.add_argument("--iw-samples", type=int, default=20)
    p.add_argument("--out", type=Path, default=root / "runs" / "tutorial")
    p.add_argument("--page", type=Path, default=Path(__file__).with_name("tutorial.md"))
    p.add_argument("--assets", type=Path, default=root / "docs" / "assets" / "tutorial")
    p.add_argument("--rates", type=float, nargs="+", default=RATES,
                   help="Word dropout rates to train (0.5 must be among them; 1 = historyless).")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="A config override passed to every training (repeatable), e.g. train.precision=bf16-mixed.")
    args = p.parse_args(argv)
    if 0.5 not in args.rates:
        p.error("--rates must include 0.5 (the model the generation steps use)")
    args.rates = sorted(set(args.rates))
    args.data_dir, args.out = args.data_dir.resolve(), args.out.resolve()
    args.assets.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    sh = Shell(args.data_dir, args.out)
    base = ["--suite", "ptb", "--data-dir", str(args.data_dir), "--max-steps", str(args.max_steps),
            "--iw-samples", str(args.iw_samples), "--set", "train.log_every=25",
            *[a for kv in args.sets for a in ("--set", kv)]]
    runs = {"constant": train(sh, "constant", [*base, "--schedule", "constant"]),
            "sigmoid": train(sh, "sigmoid", [*base, "--schedule", "sigmoid"])}
    for k in args.rates:
        reg = ["--regularizer", "historyless"] if k == 1.0 else [
            "--regularizer", "word-dropout", "--set", f"regularizers.0.rate={k}"]
        runs[f"k={k:g}"] = train(sh, f"wd-{k:g}", [*base, "--schedule", "sigmoid", *reg])
    _figures(runs, args.assets, args.rates)

    model = Path(runs["k=0.5"]["row"]["run_dir"])
    sentences = args.out / "sentences.txt"
    sentences.write_text("\n".join(RECONSTRUCT) + "\n")
    gen = {
        "sample": ["sample", str(model), "-n", "5", "--decode", "sample", "--seed", "1"],
        "reconstruct": ["reconstruct", str(model), "--input", str(sentences)],
        "interpolate": ["interpolate", str(model), *INTERPOLATE, "--steps", "6"],
    }
    negation, plain = _attribute_files(args.data_dir, args.out)
    gen["attribute"] = ["attribute", str(model), "--positive", str(negation), "--negative", str(plain),
                        *[a for s in APPLY for a in ("--apply", s)], "--scale", "2"]
    outputs = {name: (sh.show(["seqvae", *cmd]), *sh.run(cmd)) for name, cmd in gen.items()}
    page = render(runs, outputs, args, sh)
    args.page.write_text(page)
    print(page)
    return 0


def _attribute_files(data_dir: Path, out: Path) -> tuple[Path, Path]:
    """The first 300 validation sentences with the word "n't", and the first 300 without it."""
    lines = [line.strip() for line in (data_dir / "ptb.valid.txt").read_text().splitlines() if line.strip()]
    negation, plain = out / "negation.txt", out / "plain.txt"
    negation.write_text("\n".join([s for s in lines if "n't" in s.split()][:300]) + "\n")
    plain.write_text("\n".join([s for s in lines if "n't" not in s.split()][:300]) + "\n")
    return negation, plain


def _figures(runs: dict, assets: Path, rates: list[float]) -> None:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    curves = {name: read_curves(RunDir(r["row"]["run_dir"]).metrics_csv) for name, r in runs.items()}
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
    fig.savefig(assets / "kl-collapse-vs-annealing.png", dpi=110)
    plt.close(fig)

    ks = [0.0, *rates]
    rows_k = [runs["sigmoid"]["row"], *(runs[f"k={k:g}"]["row"] for k in rates)]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(ks, [r["metrics"]["kl"] for r in rows_k], "o-", label="KL")
    ax.plot(ks, [r["metrics"]["rec"] - rows_k[0]["metrics"]["rec"] for r in rows_k], "s-",
            label="reconstruction minus k = 0")
    ax.set(xlabel="word dropout rate k", ylabel="nats per sentence", title="Word dropout: KL vs reconstruction")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(assets / "word-dropout.png", dpi=110)
    plt.close(fig)


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def _block(cmd: str, output: str) -> list[str]:
    return ["```console", f"$ {cmd}", output.rstrip(), "```", ""]


def render(runs: dict, outputs: dict, args: argparse.Namespace, sh: Shell) -> str:
    """The walk-through: each step's command, what it printed, and what to read in it."""
    m = {name: r["row"]["metrics"] for name, r in runs.items()}
    rel = "assets/tutorial"
    model = sh.show([runs["k=0.5"]["row"]["run_dir"]])
    import torch

    lines = [
        f"Recorded {time.strftime('%Y-%m-%d')} by `benchmarks/quality/tutorial.py` on {platform.machine()} with "
        f"{torch.get_num_threads()} CPU thread(s): {args.max_steps:,} training steps per model, IW-NLL with "
        f"K = {args.iw_samples}, metrics on the PTB test split. The times are what each command took there.",
        "",
        "### Step 1: train a VAE, and see the posterior collapse",
        "",
        "beta = 1 from the first step (`--schedule constant`), the plain objective of a VAE:",
        "",
        *_block(runs["constant"]["cmd"], runs["constant"]["output"]),
        f"({_minutes(runs['constant']['seconds'])}.) The KL is {m['constant']['kl']:.3f} nats per sentence, "
        f"{m['constant']['au']} of 32 latent units are active and the verdict is "
        f"`collapsed {'yes' if m['constant']['collapsed'] else 'no'}`: q(z|x) is the prior for every sentence, "
        "and the decoder is a language model that ignores z.",
        "",
        "### Step 2: anneal the KL weight",
        "",
        "Sigmoid annealing starts beta near 0 and raises it to 1 over the run:",
        "",
        *_block(runs["sigmoid"]["cmd"], runs["sigmoid"]["output"]),
        f"({_minutes(runs['sigmoid']['seconds'])}.) KL {m['sigmoid']['kl']:.3f}, AU {m['sigmoid']['au']}, "
        f"shuffle gap {m['sigmoid']['shuffle_gap']:.2f} nats (against {m['constant']['shuffle_gap']:.2f} without "
        f"annealing): {_reads_z(m['sigmoid'], m['constant'])}. Each run folder has a `training.png`; the curves of "
        "both runs side by side:",
        "",
        f"![KL with beta = 1 from the start vs sigmoid annealing]({rel}/kl-collapse-vs-annealing.png)",
        "",
        "### Step 3: word dropout",
        "",
        "Replacing half of the decoder's input words by `<unk>` weakens the decoder, so it must lean on z:",
        "",
        *_block(runs["k=0.5"]["cmd"], runs["k=0.5"]["output"]),
        f"({_minutes(runs['k=0.5']['seconds'])}.) The same with other rates (change `rate`, or "
        "`--regularizer historyless` for k = 1, where the decoder sees no words at all; the script's "
        "`--rates` trains more of them):",
        "",
        "| word dropout k | -ELBO | IW-NLL | rec | KL | MI | AU | shuffle gap | collapsed |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
        *[_metric_row(f"{k:g}" + (" (historyless)" if k == 1.0 else ""), m[name])
          for k, name in zip([0.0, *args.rates], ["sigmoid", *(f"k={k:g}" for k in args.rates)])],
        "",
        f"![KL and reconstruction against the word dropout rate]({rel}/word-dropout.png)",
        "",
        _trend([m[name] for name in ["sigmoid", *(f"k={k:g}" for k in args.rates)]]),
        "",
        "### Step 4: sample from the prior",
        "",
        f"The k = 0.5 model is in `{model}`. Sentences decoded from z ~ N(0, I), sampling each word:",
        "",
        *_outputs(outputs["sample"]),
        "### Step 5: reconstruct sentences",
        "",
        "`sentences.txt` holds three sentences, one per line; each is encoded to the mean of q(z|x) and "
        "decoded greedily:",
        "",
        *_outputs(outputs["reconstruct"]),
        "### Step 6: interpolate between two sentences",
        "",
        "The path from one sentence's posterior mean to the other's, decoded at six points:",
        "",
        *_outputs(outputs["interpolate"]),
        "### Step 7: an attribute vector",
        "",
        "Negation as the attribute: `negation.txt` holds the first 300 validation sentences with the word "
        "`n't`, `plain.txt` the first 300 without it. The vector is the difference of their mean codes; "
        "`--scale 2` adds twice it to each sentence's code before decoding:",
        "",
        *_outputs(outputs["attribute"]),
    ]
    return "\n".join(lines)


def _reads_z(m: dict, collapsed: dict) -> str:
    """What the annealed run's numbers say, against the collapsed run's."""
    if not m["collapsed"] and m["shuffle_gap"] > collapsed["shuffle_gap"] + 0.1:
        return "the posterior did not collapse and the decoder reads z (shuffling z across sentences costs nats)"
    return "at this budget the decoder still ignores z"


def _trend(ms: list[dict]) -> str:
    """One sentence on how the KL, the active units and the reconstruction move with the word dropout rate."""
    def rises(key: str) -> bool:
        return all(b[key] >= a[key] for a, b in zip(ms, ms[1:]))

    kl, au, rec = rises("kl"), rises("au"), rises("rec")
    parts = [f"the KL {'grows with k' if kl else 'does not grow steadily with k'} "
             f"({ms[0]['kl']:.2f} -> {ms[-1]['kl']:.2f} nats)",
             f"the active units {'grow' if au else 'do not grow steadily'} ({ms[0]['au']} -> {ms[-1]['au']})",
             f"the reconstruction term {'gets worse' if rec else 'does not get steadily worse'} "
             f"({ms[0]['rec']:.2f} -> {ms[-1]['rec']:.2f} nats)"]
    return "From k = 0 to k = 1 " + ", ".join(parts[:2]) + " and " + parts[2] + "."


def _outputs(found: tuple[str, str, float]) -> list[str]:
    cmd, output, seconds = found
    return [*_block(cmd, output), f"({_minutes(seconds)}.)", ""]


def _metric_row(name: str, m: dict) -> str:
    return (f"| {name} | {m['neg_elbo']:.2f} | {m.get('iw_nll', float('nan')):.2f} | {m['rec']:.2f} | "
            f"{m['kl']:.3f} | {m['mi']:.3f} | {m['au']} | {m['shuffle_gap']:.2f} | "
            f"{'yes' if m['collapsed'] else 'no'} |")


if __name__ == "__main__":
    sys.exit(main())
