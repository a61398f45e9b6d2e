"""Posterior-collapse remedies side by side on one suite, with the published claim next to each row.

Every row trains the suite's model with beta = 1 from the start (schedule ``constant``: the setting
that collapses) plus one remedy, so each row differs from the ``baseline`` row in one thing only.
For each row the page states the published claim and whether the measured direction matches it;
the check is computed from the measured numbers (see ``CHECKS``), not written by hand.

Usage (from the repository root)::

    python benchmarks/quality/remedies.py                          # synthetic suite, its full budget
    python benchmarks/quality/remedies.py --suite ptb --iw-samples 100
    python benchmarks/quality/remedies.py --rows baseline aggressive --max-steps 500

Finished rows are reused (same config), so an interrupted run continues where it stopped. The page
is rewritten after every row, in the catalogue's row order, with the rows not yet measured named
as such; ``--render-only`` writes it from the finished rows without training anything. With
``--reuse runs/quality-ptb``, a finished run of ``ptb.py`` with exactly a row's config is that row
(the PTB ``baseline`` is ptb.py's ``constant`` row, ``free-bits dimension-batch`` its ``free-bits`` row)::

    python benchmarks/quality/remedies.py --suite ptb --iw-samples 100 --reuse runs/quality-ptb
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any


from seqvae.bench.runner import find_finished, run_grid
from seqvae.bench.suites import suite_config
from seqvae.config import validate_experiment
from seqvae.run_dir import RunDir
from seqvae.training import RunInterrupted

#: Per-suite settings of the remedies: free-bits floor per dimension, vMF kappa, VampPrior
#: pseudo-input length, and the dilated-CNN decoder (on the synthetic data, whose sentences are 10
#: tokens long, Yang et al.'s smallest stack would see the whole sentence, so it gets a field of 4).
SUITE_PARAMS: dict[str, dict[str, Any]] = {
    "synthetic": {"fb": 0.5, "kappa": 5.0, "pseudo_length": 10,
                  "cnn": {"kind": "dilated-cnn", "variant": "custom", "dilations": [1, 2], "kernel_size": 2}},
    "ptb": {"fb": 0.25, "kappa": 80.0, "pseudo_length": 16,
            "cnn": {"kind": "dilated-cnn", "variant": "small", "embed_dropout": 0.5, "output_dropout": 0.5},
            "skip": {"aggressive, patience 3": (
                "our variant for the synthetic suite, where the validation MI near collapse is small and noisy; "
                "each step of an aggressive phase costs up to 100 encoder updates (41 on average on the synthetic "
                "suite), so a phase of 4 or more epochs would take well over 10 CPU hours here")}},
}


NOTES = Path(__file__).with_name("notes")
"""``notes/<suite>-remedies.md``: remarks printed under a suite's table (side runs, how rows were measured)."""


def suite_notes(suite: str) -> list[str]:
    """The remarks of ``notes/<suite>-remedies.md``, one per paragraph (none without the file)."""
    path = NOTES / f"{suite}-remedies.md"
    return path.read_text().strip().split("\n\n") if path.exists() else []


def rows_for(suite: str) -> dict[str, dict[str, Any]]:
    """Row name -> config overrides on top of the suite (beta = 1 everywhere), less the suite's ``skip`` rows."""
    p = SUITE_PARAMS[suite]
    return {name: row for name, row in _all_rows(p).items() if name not in p.get("skip", {})}


def _all_rows(p: dict[str, Any]) -> dict[str, dict[str, Any]]:
    fb = p["fb"]
    return {
        "baseline": {},
        "dilated-cnn": {"decoder": p["cnn"]},
        "mog": {"prior": {"kind": "mog", "n_components": 10}},
        "vamp": {"prior": {"kind": "vamp", "n_pseudo": 50, "pseudo_length": p["pseudo_length"]}},
        "vmf": {"prior": {"kind": "vmf", "kappa": p["kappa"]}},
        "free-bits dimension-batch": {"regularizers": [{"kind": "free-bits", "threshold": fb, "mode": "dimension-batch"}]},
        "free-bits dimension": {"regularizers": [{"kind": "free-bits", "threshold": fb, "mode": "dimension"}]},
        "free-bits sentence": {"regularizers": [{"kind": "free-bits", "threshold": fb, "mode": "sentence"}]},
        "free-bits batch": {"regularizers": [{"kind": "free-bits", "threshold": fb, "mode": "batch"}]},
        "bn-vae": {"regularizers": [{"kind": "bn-vae", "gamma": 0.7}]},
        "delta-vae": {"regularizers": [{"kind": "delta-vae", "delta": 0.15}]},
        "bag-of-words": {"regularizers": [{"kind": "bag-of-words", "weight": 1.0}]},
        "aggressive": {"strategy": "aggressive"},
        "aggressive, patience 3": {"strategy": {"kind": "aggressive", "patience": 3}},
        "ae-pretrain + free bits": {"strategy": "ae-pretrain",
                                    "regularizers": [{"kind": "free-bits", "threshold": fb, "mode": "dimension"}]},
    }


#: Row -> (the published claim, the check of its direction against the measured numbers).
CLAIMS: dict[str, tuple[str, str]] = {
    "baseline": ("LSTM VAE without annealing collapses: KL 0.0, AU 0 (He et al. 2019, Yahoo/Yelp; Bowman et al. 2016)",
                 "collapsed"),
    "dilated-cnn": ("A weaker (dilated CNN) decoder keeps the KL up: Yahoo KL 10.0, Yelp 7.6 vs 0.0 for the LSTM "
                    "VAE (Yang et al. 2017, as reprinted by He et al. 2019)", "kl_up"),
    "mog": ("No posterior-collapse claim in our references; a richer prior, listed for completeness", None),
    "vamp": ("No posterior-collapse claim in our references for text; listed for completeness", None),
    "vmf": ("vMF latent: the KL is a constant set by kappa, so it cannot collapse (Xu & Durrett 2018)", "kl_const"),
    "free-bits dimension-batch": ("Free bits keep each dimension's batch-mean KL at the floor or above "
                                  "(Kingma et al. 2016)", "kl_up"),
    "free-bits dimension": ("Li et al. 2019's fb=2: KL thresholding per dimension and sentence keeps the KL up", "kl_up"),
    "free-bits sentence": ("Li et al.'s fb=1: the floor on each sentence's total KL", "kl_up"),
    "free-bits batch": ("Li et al.'s fb=3: the floor on the batch-mean total KL", "kl_up"),
    "bn-vae": ("BN-VAE: E[KL] >= d gamma^2 / 2 by construction (Zhu et al. 2020)", "kl_floor_bn"),
    "delta-vae": ("delta-VAE: every dimension commits at least delta nats (Razavi et al. 2019)", "kl_floor_delta"),
    "bag-of-words": ("A bag-of-words loss on z raises the KL (Zhao et al. 2017; recalled, not in our verified "
                     "references)", "kl_up"),
    "aggressive": ("Aggressive encoder training avoids collapse: Yahoo AU 15 / KL 5.7, SNLI AU 5, PTB AU 4 / KL 0.93 "
                   "vs AU 0 for the annealed VAE (He et al. 2019; Optimus reprint, verified-numbers.md)", "au_up"),
    "aggressive, patience 3": ("As above; the phase ends after 3 falls of the validation MI in a row instead of 1 "
                               "(our variant: near collapse the MI estimate is small and noisy)", "au_up"),
    "ae-pretrain + free bits": ("AE pretraining + free bits: PTB KL 6.54 with all 32 units active, and an IW-NLL "
                                "below the LSTM-LM's (PPL 96.86 vs 100.47; Li et al. 2019, Optimus reprint)",
                                "au_up_nll_down"),
}


def check(kind: str | None, m: dict, base: dict | None, cfg) -> str:
    """Whether the measured direction matches the claim, as a short sentence."""
    if kind is None:
        return "no claim to check"
    if kind == "collapsed":
        return "matches: collapsed" if m["collapsed"] else "does not match: not collapsed"
    if kind == "kl_const":
        return "matches: KL is the constant {:.3f} of kappa".format(m["kl"])
    if kind == "kl_floor_bn":
        gamma = cfg.regularizers[0].gamma
        floor = cfg.model.latent_dim * gamma**2 / 2
        ok = m["kl"] >= 0.99 * floor
        return f"{'matches' if ok else 'does not match'}: KL {m['kl']:.3f} vs floor {floor:.3f}"
    if kind == "kl_floor_delta":
        floor = cfg.model.latent_dim * cfg.regularizers[0].delta
        ok = m["kl"] >= floor - 1e-3
        return f"{'matches' if ok else 'does not match'}: KL {m['kl']:.3f} vs floor {floor:.3f}"
    if base is None:
        return "baseline row missing"
    if kind == "kl_up":
        ok = m["kl"] > base["kl"] + 0.1 and m["au"] > 0
        return f"{'matches' if ok else 'does not match'}: KL {base['kl']:.3f} -> {m['kl']:.3f}, AU {base['au']} -> {m['au']}"
    if kind == "au_up":
        ok = m["au"] > base["au"] and not m["collapsed"]
        return f"{'matches' if ok else 'does not match'}: AU {base['au']} -> {m['au']}, KL {base['kl']:.3f} -> {m['kl']:.3f}"
    if kind == "au_up_nll_down":  # the collapsed baseline's IW-NLL stands in for the LM's (within 0.1 nats on PTB)
        if m.get("iw_nll") is None or base.get("iw_nll") is None:
            return check("au_up", m, base, cfg) + "; IW-NLL not measured"
        ok = m["iw_nll"] < base["iw_nll"]
        return (f"{check('au_up', m, base, cfg)}; IW-NLL {base['iw_nll']:.2f} -> {m['iw_nll']:.2f} "
                f"{'matches' if ok else 'does not match'}")
    raise ValueError(kind)


def main(argv: list[str] | None = None) -> int:
    root = Path(__file__).resolve().parents[2]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--suite", choices=sorted(SUITE_PARAMS), default="synthetic")
    p.add_argument("--data-dir", type=Path, default=None, help="Corpus folder (ptb: default ../shared/data/ptb).")
    p.add_argument("--max-steps", type=int, default=None, help="Steps per row (default: the suite's).")
    p.add_argument("--iw-samples", type=int, default=500)
    p.add_argument("--rows", nargs="*", default=None, help="Rows to run (default: all).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="Run folders (default runs/quality-remedies-<suite>).")
    p.add_argument("--page", type=Path, default=None, help="Results page (default <suite>-remedies.md here).")
    p.add_argument("--note", action="append", default=[], help="A remark printed under the table (repeatable).")
    p.add_argument("--render-only", action="store_true",
                   help="Train nothing: write the page from the rows already finished (the others are listed as not run).")
    p.add_argument("--reuse", type=Path, action="append", default=[],
                   help="Another benchmark's run folders (e.g. runs/quality-ptb): a finished run there with "
                        "exactly a row's config is that row (repeatable).")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    all_rows = rows_for(args.suite)
    names = args.rows or list(all_rows)
    unknown = [n for n in names if n not in all_rows]
    if unknown:
        p.error(f"unknown rows {unknown}; available: {', '.join(all_rows)}")
    out = args.out or root / "runs" / f"quality-remedies-{args.suite}"
    page = args.page or Path(__file__).with_name(f"{args.suite}-remedies.md")

    base = suite_config(args.suite)
    base["schedule"] = "constant"
    if args.suite == "ptb":
        data_dir = args.data_dir or root.parent / "shared" / "data" / "ptb"
        base["data"]["dataset"] = {"kind": "ptb", "data_dir": str(data_dir.resolve())}
    base["eval"]["iw_samples"] = args.iw_samples
    base["train"]["seed"] = args.seed
    if args.max_steps:
        base["train"]["max_steps"] = args.max_steps
    configs = {n: validate_experiment({**base, **all_rows[n]}, source=f"row {n}") for n in names}
    folders = {n: n.replace(", ", "_").replace(" ", "_").replace("+", "plus") for n in configs}
    rows: dict[str, dict] = {}
    by_folder = {folder: n for n, folder in folders.items()}

    def write_page() -> str:
        # catalogue order, whatever order the rows ran in; an unfinished row shows how far it got
        text = render({n: rows.get(n) or _in_progress(out / folders[n], configs[n]) or {"status": "pending"}
                       for n in all_rows if n in configs}, configs, args)
        page.write_text(text)
        return text

    def on_result(row: dict) -> None:
        folder = Path(row["run_dir"])
        rows[by_folder[folder.name] if folder.parent == out else _row_of(row, configs)] = row
        write_page()

    if args.render_only:  # the finished rows only, nothing trained
        for n, cfg in configs.items():
            if (found := find_finished(cfg, out / folders[n], args.reuse)) is not None:
                rows[n] = found
    else:
        try:
            run_grid(list(configs.values()), out, names=list(folders.values()), reuse=args.reuse,
                     on_result=on_result, resume=True)
        except RunInterrupted:  # SIGTERM: the page shows how far the row got; its state is saved for the next run
            write_page()
            raise
    print(write_page())
    return 0 if all(r.get("status") == "ok" for r in rows.values()) and len(rows) == len(configs) else 1


def _row_of(row: dict, configs: dict) -> str:
    """The row whose config a result reused from another benchmark's folder has."""
    from seqvae.run_dir import RunDir

    return next(n for n, cfg in configs.items() if RunDir(row["run_dir"]).same_config(cfg))


def _f(m: dict, key: str, spec: str) -> str:
    v = m.get(key)
    return "-" if v is None else format(v, spec)


def render(rows: dict, configs: dict, args: argparse.Namespace) -> str:
    """The results page."""
    cfg0 = next(iter(configs.values()))
    t, mdl = cfg0.train, cfg0.model
    base = (rows.get("baseline") or {}).get("metrics")
    cmd = " ".join(["python benchmarks/quality/remedies.py", f"--suite {args.suite}",
                    *([f"--max-steps {args.max_steps}"] if args.max_steps else []), f"--iw-samples {args.iw_samples}",
                    *[f"--reuse {_relative(d)}" for d in args.reuse]])
    lines = [
        f"# Posterior-collapse remedies on the `{args.suite}` suite",
        "",
        f"Rows measured {_dates(rows)} on {platform.machine()} with {_threads(rows)} (Python "
        f"{platform.python_version()}), written by `benchmarks/quality/remedies.py`. Command: `{cmd}`.",
        "",
        f"Every row: suite `{args.suite}` (embedding {mdl.embed_dim}, hidden {mdl.hidden_size}, latent "
        f"{mdl.latent_dim}, batch {cfg0.data.batch_size}, Adam {t.lr:g}, {t.max_steps:,} steps, seed {t.seed}), "
        "KL weight beta = 1 from the first step (no annealing), plus the one remedy the row names. Metrics on "
        f"the test split; IW-NLL with K = {args.iw_samples}; nats per sentence. The `mog` and `vamp` rows use a "
        "one-sample Monte Carlo KL (no closed form); every other KL is analytic. Collapse verdict: AU = 0 or "
        "KL < 0.1.",
        "",
        *_status(rows),
        "| row | IW-NLL | -ELBO | KL | MI | AU | shuffle gap | collapsed | train s | eval s | published claim | direction |",
        "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|---|---|",
    ]
    for name, r in rows.items():
        if r.get("status") == "pending":
            lines.append(f"| {name} | not run yet |" + " |" * 8 + f" {CLAIMS[name][0]} | - |")
            continue
        if r.get("status") == "in progress":
            lines.append(f"| {name} | in progress: step {r['step']:,} of {configs[name].train.max_steps:,} |"
                         + " |" * 6 + f" {r['train_seconds']:.0f} so far | | {CLAIMS[name][0]} | - |")
            continue
        if r.get("status") != "ok":
            lines.append(f"| {name} | failed: {r.get('error', '?')} |" + " |" * 10)
            continue
        m = r["metrics"]
        claim, kind = CLAIMS[name]
        verdict = "yes" if m["collapsed"] else "no"
        lines.append(
            f"| {name} | {_f(m, 'iw_nll', '.2f')} | {_f(m, 'neg_elbo', '.2f')} | {_f(m, 'kl', '.3f')} | "
            f"{_f(m, 'mi', '.3f')} | {m['au']} | {_f(m, 'shuffle_gap', '.3f')} | {verdict} | "
            f"{r['train_seconds']:.0f} | {r['eval_seconds']:.0f} | {claim} | {check(kind, m, base, configs[name])} |"
        )
    skipped = SUITE_PARAMS[args.suite].get("skip", {})
    lines += [f"\nNot run on this suite: `{name}`, {why}." for name, why in skipped.items()]
    lines += [f"\n{note}" for note in [*suite_notes(args.suite), *args.note]]
    notes = [f"- `{n}`: {json.dumps(r['strategy_state'])}" for n, r in rows.items()
             if r.get("status") == "ok" and r.get("strategy_state")]
    if notes:
        lines += ["", "What the strategies did (from each run's `result.json`):", "", *notes]
    running = [f"- `{n}`, at step {r['step']:,}: {json.dumps(r['strategy_state'])}" for n, r in rows.items()
               if r.get("status") == "in progress" and r.get("strategy_state")]
    if running:
        lines += ["", f"The strategy state of the rows in progress (from their `{RunDir.RESUME}`):", "", *running]
    lines += [
        "",
        "The direction column compares with the baseline row: `kl_up` rows must raise the KL by more than",
        "0.1 nats with AU > 0; strategy rows must raise AU and escape the collapse verdict; BN-VAE and",
        "delta-VAE rows must reach their constructive floors (d gamma^2 / 2 and d delta).",
    ]
    return "\n".join(lines) + "\n"


def _in_progress(run_dir: Path, cfg) -> dict | None:
    """How far an interrupted training of ``cfg`` in ``run_dir`` got, from its resume checkpoint.

    The step, the training seconds so far and the strategy's plain state (its optimizer state left
    out); None when there is no checkpoint of this config or it cannot be read.
    """
    rd = RunDir(run_dir)
    if not rd.same_config(cfg, training_only=True):
        return None
    try:
        progress = rd.training_progress()
    except ValueError as exc:  # a page is still worth writing; say why this row shows no progress
        logging.warning("cannot read its progress: %s", exc)
        return None
    if progress is None:
        return None
    plain = {k: _rounded(v) for k, v in progress["strategy_state"].items()
             if v is None or isinstance(v, (bool, int, float, str, list))}
    return {"status": "in progress", "step": progress["step"], "train_seconds": progress["train_seconds"],
            "strategy_state": plain}


def _rounded(value: Any) -> Any:
    """``value`` with its floats (also inside lists) rounded to 4 decimals, for the page."""
    if isinstance(value, float):
        return round(value, 4)
    return [_rounded(v) for v in value] if isinstance(value, list) else value


def _dates(rows: dict) -> str:
    """When the finished rows were measured: the day (or the first and last days) their result.json was written."""
    days = sorted({time.strftime("%Y-%m-%d", time.gmtime(RunDir(r["run_dir"]).result_file.stat().st_mtime))
                   for r in rows.values() if r.get("status") == "ok" and RunDir(r["run_dir"]).is_finished()})
    if not days:
        return "(none yet)"
    return days[0] if len(days) == 1 else f"{days[0]} to {days[-1]}"


def _relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (the command line on the page)."""
    root = Path(__file__).resolve().parents[2]
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)


def _status(rows: dict) -> list[str]:
    """A line saying how many rows are measured, when some are not (the page is rewritten after each row)."""
    waiting = [n for n, r in rows.items() if r.get("status") in ("pending", "in progress")]
    if not waiting:
        return []
    done = len(rows) - len(waiting)
    return [f"**Partial: {done} of {len(rows)} rows measured.** The rows marked *not run yet* or *in progress* "
            "are still to be trained; the script resumes where it stopped (an interrupted row from its last "
            "checkpoint) and rewrites this page after every row.", ""]


def _threads(rows: dict) -> str:
    """The CPU threads the rows trained with, from their result.json (recorded since 2026-11-29)."""
    counts = sorted({r["threads"] for r in rows.values() if r.get("status") == "ok" and "threads" in r})
    older = any(r.get("status") == "ok" and "threads" not in r for r in rows.values())
    said = " or ".join(map(str, counts)) + (" CPU thread" if counts == [1] else " CPU threads") if counts else ""
    if older:
        said += (" (older rows: not recorded; the benchmark ran with the machine's 2 threads)" if said
                 else "the machine's 2 CPU threads (not recorded in the rows' result.json)")
    return said


if __name__ == "__main__":
    sys.exit(main())
