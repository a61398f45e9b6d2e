"""``seqvae bench``: a grid of runs through the posterior-collapse benchmarks (and --resume, --rerun)."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from seqvae.cli._common import (
    COMPONENTS, HARDWARE, OUTPUT, TRAINING, AcceleratorOpt, BatchOpt, DevicesOpt, DistOpt, NodesOpt, PrecisionOpt,
    FormatOpt, LoggerOpt, ScaleLrOpt, _batch, _check_format, _loggers, _check_before_writing, _fail, _resolve_data_dir, _hardware, _load_corpora, _progress_wanted, _raw_config, _set_data_dir, _setup_logging,
    app, log, out,
)
from seqvae.config import ConfigError, apply_overrides, validate_experiment

INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a process stopped by SIGTERM


def _regularizer_axis(values: list[str]) -> list[list[str]]:
    """``--regularizer a+b`` combines a and b in one cell; ``none`` means no regularizer."""
    axis = []
    for v in values:
        parts = [p.strip() for p in v.split("+") if p.strip()]
        axis.append([] if parts in ([], ["none"]) else parts)
    return axis


@app.command(
    epilog=(
        "Examples:\n\n"
        "  seqvae bench --decoder lstm --schedule sigmoid\n\n"
        "  seqvae bench --decoder lstm --decoder gru --schedule sigmoid --schedule cyclical\n\n"
        "  seqvae bench --regularizer word-dropout --regularizer word-dropout+free-bits "
        "--set regularizers.0.rate=0.5 --json\n\n"
        "  seqvae bench --suite synthetic --schedule constant --strategy standard --strategy aggressive"
    )
)
def bench(
    encoder: Annotated[Optional[list[str]], typer.Option("--encoder", help="Encoder name.", rich_help_panel=COMPONENTS)] = None,
    decoder: Annotated[Optional[list[str]], typer.Option("--decoder", help="Decoder name.", rich_help_panel=COMPONENTS)] = None,
    prior: Annotated[Optional[list[str]], typer.Option("--prior", help="Prior name.", rich_help_panel=COMPONENTS)] = None,
    schedule: Annotated[Optional[list[str]], typer.Option("--schedule", help="KL schedule name.", rich_help_panel=COMPONENTS)] = None,
    regularizer: Annotated[Optional[list[str]], typer.Option("--regularizer", help="Regularizer; 'a+b' combines, 'none' for none.", rich_help_panel=COMPONENTS)] = None,
    strategy: Annotated[Optional[list[str]], typer.Option("--strategy", help="Training strategy (standard, aggressive, ae-pretrain, ...).", rich_help_panel=COMPONENTS)] = None,
    seed: Annotated[Optional[list[int]], typer.Option("--seed", help="Seed (repeat for several).", rich_help_panel=COMPONENTS)] = None,
    suite: Annotated[str, typer.Option("--suite", help="Benchmark suite fixing data, sizes and budget.", rich_help_panel=TRAINING)] = "synthetic",
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Dataset name (overrides the suite's).", rich_help_panel=TRAINING)] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Folder of the corpus files (sets data.dataset.data_dir).", rich_help_panel=TRAINING)] = None,
    max_steps: Annotated[Optional[int], typer.Option("--max-steps", help="Training steps per cell.", rich_help_panel=TRAINING)] = None,
    batch_size: BatchOpt = None,
    scale_lr: ScaleLrOpt = None,
    iw_samples: Annotated[Optional[int], typer.Option("--iw-samples", help="K for IW-NLL (default 500; 0 = skip).", rich_help_panel=TRAINING)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON experiment config merged over the suite.", rich_help_panel=TRAINING)] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override, e.g. decoder.num_layers=2.", rich_help_panel=TRAINING)] = None,
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    num_nodes: NodesOpt = None,
    distributed: DistOpt = None,
    precision: PrecisionOpt = None,
    parallel: Annotated[int, typer.Option("--parallel", help="Cells run at once, each in its own process with cores/N threads.", rich_help_panel=HARDWARE)] = 1,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/bench-<time>).", rich_help_panel=OUTPUT)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse an output folder that holds results.", rich_help_panel=OUTPUT)] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the bench in this folder: finished cells are kept, unfinished ones resume.", rich_help_panel=OUTPUT)] = None,
    rerun: Annotated[Optional[Path], typer.Option("--rerun", help="Run a run folder's config again (into --out) and compare the metrics.", rich_help_panel=OUTPUT)] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON array.", rich_help_panel=OUTPUT)] = False,
    fmt: FormatOpt = "table",
    logger: LoggerOpt = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the grid, run nothing.", rich_help_panel=OUTPUT)] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache of generated data ($SEQVAE_CACHE).", rich_help_panel=OUTPUT)] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bars (default: on a terminal).", rich_help_panel=OUTPUT)] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.", rich_help_panel=OUTPUT)] = False,
) -> None:
    """Train and evaluate a grid of models and print the posterior-collapse metrics."""
    _setup_logging(verbose)
    _check_format(fmt)
    if parallel < 1:
        _fail(f"--parallel must be >= 1, got {parallel}")
    given = [flag for flag, v in (("--encoder", encoder), ("--decoder", decoder), ("--prior", prior),
                                  ("--schedule", schedule), ("--regularizer", regularizer), ("--strategy", strategy),
                                  ("--seed", seed), ("--dataset", dataset), ("--data-dir", data_dir),
                                  ("--max-steps", max_steps), ("--batch-size", batch_size), ("--scale-lr", scale_lr),
                                  ("--iw-samples", iw_samples), ("--config", config),
                                  ("--set", sets), ("--accelerator", accelerator), ("--devices", devices),
                                  ("--num-nodes", num_nodes), ("--distributed", distributed),
                                  ("--precision", precision), ("--logger", logger)) if v]
    if resume is not None or rerun is not None:
        if resume is not None and rerun is not None:
            _fail("--resume and --rerun exclude each other")
        if given:
            what = "--resume takes the grid stored in its folder" if resume else "--rerun takes the run's own config"
            _fail(f"{what}; drop {', '.join(given)}")
        if resume is not None:
            _resume_bench(resume, cache_dir, progress, as_json, parallel, fmt)
        else:
            _rerun(rerun, out_dir, overwrite, cache_dir, progress, as_json)
        return
    try:
        raw = _raw_config(config, [], suite)
        if dataset:
            raw.setdefault("data", {})["dataset"] = dataset
        if data_dir is not None:
            _set_data_dir(raw, data_dir)
        if max_steps is not None:
            raw.setdefault("train", {})["max_steps"] = max_steps
        if iw_samples is not None:
            raw.setdefault("eval", {})["iw_samples"] = iw_samples
        _batch(raw, batch_size, scale_lr)
        _loggers(raw, logger)
        _hardware(raw, accelerator, devices, num_nodes, distributed, precision)
        from seqvae.bench.grid import expand_grid

        axes = {"encoder": encoder, "decoder": decoder, "prior": prior, "schedule": schedule,
                "regularizers": _regularizer_axis(regularizer) if regularizer else None, "strategy": strategy,
                "seed": seed}
        # --set applies last, to every cell, so it can reach into what the axes put there
        # (``--regularizer word-dropout --set regularizers.0.rate=0.5``)
        cells = [_resolve_data_dir(apply_overrides(c, list(sets or []))) for c in expand_grid(raw, {k: v for k, v in axes.items() if v})]
        configs = []
        for i, cell in enumerate(cells):
            source = str(config) if config is not None else "config"
            if len(cells) > 1:
                source += f" (grid cell {i})"
            configs.append(validate_experiment(cell, source=source))
    except ConfigError as exc:
        _fail(str(exc))
    _check_parallel(parallel, configs)
    from seqvae.bench.runner import cell_name, run_grid

    if dry_run:
        if as_json:
            sys.stdout.write(json.dumps([c.model_dump(mode="json") for c in configs]) + "\n")
        else:
            for i, c in enumerate(configs):
                out.print(cell_name(i, c))
        raise typer.Exit(0)
    out_dir = out_dir or Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    from seqvae.distributed import is_rank_zero

    from seqvae.run_dir import GRID_FILE, RESULTS_FILE

    _check_before_writing(out_dir, configs)
    if is_rank_zero() and ((out_dir / RESULTS_FILE).exists() or (out_dir / GRID_FILE).exists()) and not overwrite:
        _fail(f"{out_dir}: already holds another bench; continue it with --resume {out_dir}, "
              "or pass --overwrite, or pick --out")
    corpora = _load_corpora(configs, cache_dir)  # bad corpus input stops here, before any training
    log.info("running %d cell(s) into %s", len(configs), out_dir)
    rows = _interruptible(lambda: run_grid(configs, out_dir, cache_dir=cache_dir, progress=_progress_wanted(progress),
                                           corpora=corpora, parallel=parallel), out_dir)
    _report_grid(rows, f"seqvae bench ({suite}) -> {out_dir}", as_json, fmt)


def _report_grid(rows: list[dict[str, Any]], title: str, as_json: bool, fmt: str = "table") -> None:
    """Print the grid's rows (table or JSON); exit 1 when a cell failed. Only global rank 0 reports."""
    from seqvae.distributed import is_rank_zero

    if not is_rank_zero():
        return
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        from seqvae.bench.report import render_results

        render_results(out, rows, title, fmt)
        rule = next((r["metrics"]["collapse_rule"] for r in rows if r.get("metrics")), None)
        if rule and fmt != "tsv":
            out.print(f"Collapse verdict: {rule}.")
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)


def _interruptible(grid: Any, out_dir: Path) -> list[dict[str, Any]]:
    """Run ``grid()``; a SIGTERM stops the whole grid with exit code 143 and the command that continues it."""
    from seqvae.training import RunInterrupted

    try:
        return grid()
    except RunInterrupted as exc:
        _fail(f"{exc}; continue the grid with: seqvae bench --resume {out_dir}", code=getattr(exc, "exit_code", INTERRUPTED))
        raise  # unreachable: _fail exits


def _check_parallel(parallel: int, configs: list[Any]) -> None:
    """``--parallel`` runs whole cells side by side; a cell that itself uses several devices cannot."""
    if parallel > 1 and any(c.train.world_size > 1 for c in configs):
        _fail("--parallel runs cells side by side on one machine; it does not combine with --devices/--num-nodes > 1")


def _resume_bench(out_dir: Path, cache_dir: Optional[Path], progress: Optional[bool], as_json: bool,
                  parallel: int = 1, fmt: str = "table") -> None:
    """``seqvae bench --resume OUT_DIR``: the stored grid again; finished cells kept, the others resumed."""
    from seqvae.bench.runner import read_grid, run_grid

    try:
        configs, names = read_grid(out_dir)
    except ConfigError as exc:
        _fail(str(exc))
    _check_parallel(parallel, configs)
    corpora = _load_corpora(configs, cache_dir)
    log.info("resuming %d cell(s) in %s", len(configs), out_dir)
    rows = _interruptible(lambda: run_grid(configs, out_dir, names=names, cache_dir=cache_dir,
                                           progress=_progress_wanted(progress), corpora=corpora, resume=True,
                                           parallel=parallel), out_dir)
    _report_grid(rows, f"seqvae bench --resume {out_dir}", as_json, fmt)


def _rerun(run_dir: Path, out_dir: Optional[Path], overwrite: bool, cache_dir: Optional[Path],
           progress: Optional[bool], as_json: bool) -> None:
    """``seqvae bench --rerun RUN_DIR``: train the stored config again and compare every metric."""
    from seqvae.bench.runner import rerun
    from seqvae.run_dir import RunDir

    rd = RunDir(run_dir)
    original = rd.read_result()
    if original is None:
        _fail(f"{run_dir}: not a finished seqvae run (no readable {rd.RESULT})")
    try:
        cfg = rd.read_config()
    except ConfigError as exc:
        _fail(str(exc))
    target = out_dir or run_dir.with_name(run_dir.name + "-rerun")
    if target.resolve() == run_dir.resolve():
        _fail(f"--out {target}: the rerun needs its own folder, not the original's")
    if RunDir(target).exists() and not overwrite:
        _fail(f"{target}: already holds a run; pass --overwrite or pick --out")
    (corpus,) = _load_corpora([cfg], cache_dir).values()
    report = rerun(rd, target, cache_dir=cache_dir, progress=_progress_wanted(progress), corpus=corpus)
    diffs = report["differences"]
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    elif diffs:
        out.print(f"{target} differs from {run_dir}:")
        for d in diffs:
            out.print(f"  {d['metric']}: {d['original']} -> {d['rerun']}")
    else:
        n = report["compared"]
        out.print(f"reproduced: all {n} numeric metrics of {run_dir} are equal in {target}")
    if diffs:
        raise typer.Exit(1)
