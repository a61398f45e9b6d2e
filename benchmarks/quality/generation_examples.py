"""Run the generation commands on a trained PTB model and record commands and outputs as markdown.

The docs page "Generation and the latent space" includes the page this writes, so every sample,
reconstruction and interpolation shown there comes from a command printed next to it.

Usage (from the repository root, after ``benchmarks/quality/ptb.py`` trained its rows)::

    python benchmarks/quality/generation_examples.py --run runs/quality-ptb/sigmoid+wd
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

INTERPOLATE = ("the company said it expects to report a loss for the third quarter",
               "i do n't think it 's a good idea")


def _cell(value: object) -> str:
    """A markdown table cell: ``<unk>`` must not read as an HTML tag, ``|`` not as a column break."""
    text = str(value)
    for a, b in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("_", "\\_"), ("*", "\\*")):
        text = text.replace(a, b)
    return text


def run(args: list[str]) -> list[str]:
    """The command's ``--json`` rows as markdown table lines (the text output shows the same table)."""
    res = subprocess.run(["seqvae", *args, "--json"], capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"seqvae {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    rows = json.loads(res.stdout)["rows"]
    heads = list(rows[0])
    table = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    table += ["| " + " | ".join(_cell(r[h]) for h in heads) + " |" for r in rows]
    return table


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, default=root / "runs" / "quality-ptb" / "sigmoid+wd")
    p.add_argument("--data-dir", type=Path, default=root.parent / "shared" / "data" / "ptb")
    p.add_argument("--page", type=Path, default=Path(__file__).with_name("ptb-generation.md"))
    args = p.parse_args(argv)
    run_dir = args.run.resolve()
    shown = "RUN"
    test_lines = (args.data_dir / "ptb.test.txt").read_text().splitlines()
    inputs = root / "runs" / "ptb-test-5.txt"
    inputs.parent.mkdir(parents=True, exist_ok=True)
    inputs.write_text("\n".join(line.strip() for line in test_lines[100:105]) + "\n")
    commands = [
        ("Samples from the prior, greedy decoding", ["sample", str(run_dir), "-n", "6"]),
        ("Samples, nucleus sampling (top-p 0.9, seed 1)", ["sample", str(run_dir), "-n", "6", "--decode", "top-p",
                                                           "--top-p", "0.9", "--seed", "1"]),
        ("Samples, beam search (width 5)", ["sample", str(run_dir), "-n", "6", "--decode", "beam"]),
        ("Reconstructions of PTB test sentences 101-105 (z = posterior mean, greedy)",
         ["reconstruct", str(run_dir), "--input", str(inputs)]),
        ("Interpolation between two sentences (8 steps, greedy)",
         ["interpolate", str(run_dir), *INTERPOLATE, "--steps", "8"]),
    ]
    lines = [
        f"Recorded {time.strftime('%Y-%m-%d')} by `benchmarks/quality/generation_examples.py` with `RUN` = "
        f"`{os.path.relpath(run_dir, root)}` (the `sigmoid+wd` row of the PTB quality benchmark: sigmoid "
        "annealing and word dropout 0.25). The input file holds lines 101-105 of `ptb.test.txt`.",
        "",
    ]
    for title, cmd in commands:
        shell = "seqvae " + " ".join(shlex.quote(a) for a in cmd).replace(shlex.quote(str(run_dir)), shown)
        shell = shell.replace(shlex.quote(str(inputs)), "ptb-test-5.txt")
        lines += [f"**{title}**", "", "```bash", shell, "```", "", *run(cmd), ""]
    args.page.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
