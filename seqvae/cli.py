"""The ``seqvae`` command. Thin: it parses, calls the library and prints.

Importing this module (``seqvae --help``, ``seqvae plugins list``) does not import torch.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from seqvae.config import ConfigError, apply_overrides, load_config_file, validate_experiment

app = typer.Typer(
    name="seqvae",
    help="Sequence VAEs and the posterior-collapse benchmarks.",
    no_args_is_help=True,
    rich_markup_mode="rich",
    pretty_exceptions_show_locals=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            sys.stdout.write(f"seqvae {version('seqvae')}\n")
        except PackageNotFoundError:  # run from a source tree that is not installed
            sys.stdout.write("seqvae (not installed)\n")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[bool, typer.Option("--version", help="Print seqvae's version and exit.",
                                               callback=_version, is_eager=True)] = False,
) -> None:
    """Sequence VAEs and the posterior-collapse benchmarks."""


plugins_app = typer.Typer(help="Registered components (built-ins and plugins).", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")
config_app = typer.Typer(help="The experiment config: its JSON Schema.", no_args_is_help=True)
app.add_typer(config_app, name="config")

out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)
log = logging.getLogger("seqvae")

COMPONENTS = "Components (repeat a flag to add a grid axis)"
HARDWARE = "Hardware"
AcceleratorOpt = Annotated[Optional[str], typer.Option("--accelerator", help="cpu, gpu or auto (CUDA when present).", rich_help_panel=HARDWARE)]
DevicesOpt = Annotated[Optional[int], typer.Option("--devices", help="Devices (processes) per node; the global batch is split between them.", rich_help_panel=HARDWARE)]
NodesOpt = Annotated[Optional[int], typer.Option("--num-nodes", help="Nodes of a multi-node run (launched by torchrun or SLURM).", rich_help_panel=HARDWARE)]
DistOpt = Annotated[Optional[str], typer.Option("--distributed", help="Lightning strategy for several devices: ddp (default), ddp_spawn, ddp_fork.", rich_help_panel=HARDWARE)]
PrecisionOpt = Annotated[Optional[str], typer.Option("--precision", help="32-true or bf16-mixed.", rich_help_panel=HARDWARE)]


def _hardware(raw: dict[str, Any], accelerator: Optional[str], devices: Optional[int], num_nodes: Optional[int],
              distributed: Optional[str], precision: Optional[str]) -> None:
    """Put the hardware flags into ``raw['train']`` (validated with the rest of the config)."""
    for key, value in (("accelerator", accelerator), ("devices", devices), ("num_nodes", num_nodes),
                       ("distributed", distributed), ("precision", precision)):
        if value is not None:
            raw.setdefault("train", {})[key] = value
TRAINING = "Training"
OUTPUT = "Output"
BatchOpt = Annotated[Optional[int], typer.Option(
    "--batch-size", help="Training sentences per batch (sets data.batch_size; the learning rate stays as it is unless --scale-lr).",
    rich_help_panel=TRAINING)]
ScaleLrOpt = Annotated[Optional[str], typer.Option(
    "--scale-lr", help="With --batch-size N: scale train.lr by N/B (linear) or sqrt(N/B) (sqrt), B the config's batch size.",
    rich_help_panel=TRAINING)]
LR_SCALING = {"linear": 1.0, "sqrt": 0.5}


def _batch(raw: dict[str, Any], batch_size: Optional[int], scale_lr: Optional[str]) -> None:
    """Put ``--batch-size`` into ``raw`` and, with ``--scale-lr``, scale the learning rate to match.

    Nothing is scaled unless asked: a bigger batch at the same learning rate is a different
    optimisation, and which scaling rule is right depends on the optimizer, so the user chooses.
    """
    if scale_lr is not None and scale_lr not in LR_SCALING:
        _fail(f"--scale-lr must be linear or sqrt, got '{scale_lr}'")
    if batch_size is None:
        if scale_lr is not None:
            _fail("--scale-lr scales the learning rate to a new --batch-size; give --batch-size too")
        return
    if batch_size < 1:
        _fail(f"--batch-size must be >= 1, got {batch_size}")
    from seqvae.config import DataConfig, TrainConfig

    data, train_ = raw.setdefault("data", {}), raw.setdefault("train", {})
    base = data.get("batch_size", DataConfig.model_fields["batch_size"].default)
    data["batch_size"] = batch_size
    if scale_lr is not None:
        lr = train_.get("lr", TrainConfig.model_fields["lr"].default)
        if not isinstance(base, int) or isinstance(base, bool) or base < 1 or not isinstance(lr, (int, float)):
            _fail(f"--scale-lr: the config's data.batch_size ({base!r}) and train.lr ({lr!r}) must be numbers")
        train_["lr"] = lr * (batch_size / base) ** LR_SCALING[scale_lr]
        log.info("batch %d -> %d: lr %.4g -> %.4g (%s scaling)", base, batch_size, lr, train_["lr"], scale_lr)
EvalPrecisionOpt = Annotated[Optional[str], typer.Option(
    "--precision", help="32-true (default) or bf16-mixed: evaluate under bf16 autocast (float32 reductions).",
    rich_help_panel=HARDWARE)]


def _one_device(accelerator: Optional[str], devices: Optional[int]) -> Any:
    """The torch device that ``--accelerator/--devices`` name for evaluation and generation (one process).

    Checked before anything is loaded or written: exit 2 with one line on a bad choice.
    """
    acc = accelerator or "cpu"
    if acc not in ("cpu", "gpu", "auto"):
        _fail(f"--accelerator must be cpu, gpu or auto, got '{acc}'")
    if devices is not None and devices != 1:
        _fail(f"--devices: evaluation and generation run in one process on one device (got {devices}; use 1)")
    import torch

    if acc == "gpu" and not torch.cuda.is_available():
        _fail("--accelerator gpu: torch sees no CUDA device (torch.cuda.is_available() is False); "
              "use --accelerator cpu or auto")
    return torch.device("cuda" if acc != "cpu" and torch.cuda.is_available() else "cpu")



def _fail(message: str, code: int = 2) -> None:
    from rich.markup import escape

    err.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _setup_logging(verbose: bool) -> None:
    from rich.logging import RichHandler

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(message)s",
        handlers=[RichHandler(console=err, show_path=False, show_time=False)],
        force=True,
    )


def _progress_wanted(flag: Optional[bool]) -> bool:
    if flag is not None:
        return flag
    return err.is_terminal and not os.environ.get("CI")


def _raw_config(config: Optional[Path], sets: list[str], suite: Optional[str]) -> dict[str, Any]:
    from seqvae.bench.suites import suite_config

    raw: dict[str, Any] = {}
    if suite:
        try:
            raw = suite_config(suite)
        except ValueError as exc:
            _fail(str(exc))
    if config is not None:
        user = load_config_file(config)
        raw = _deep_merge(raw, user)
    return apply_overrides(raw, sets)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for k, v in top.items():
        merged[k] = _deep_merge(merged[k], v) if isinstance(v, dict) and isinstance(merged.get(k), dict) else v
    return merged


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
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the grid, run nothing.", rich_help_panel=OUTPUT)] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache of generated data ($SEQVAE_CACHE).", rich_help_panel=OUTPUT)] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bars (default: on a terminal).", rich_help_panel=OUTPUT)] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.", rich_help_panel=OUTPUT)] = False,
) -> None:
    """Train and evaluate a grid of models and print the posterior-collapse metrics."""
    _setup_logging(verbose)
    if parallel < 1:
        _fail(f"--parallel must be >= 1, got {parallel}")
    given = [flag for flag, v in (("--encoder", encoder), ("--decoder", decoder), ("--prior", prior),
                                  ("--schedule", schedule), ("--regularizer", regularizer), ("--strategy", strategy),
                                  ("--seed", seed), ("--dataset", dataset), ("--data-dir", data_dir),
                                  ("--max-steps", max_steps), ("--batch-size", batch_size), ("--scale-lr", scale_lr),
                                  ("--iw-samples", iw_samples), ("--config", config),
                                  ("--set", sets), ("--accelerator", accelerator), ("--devices", devices),
                                  ("--num-nodes", num_nodes), ("--distributed", distributed),
                                  ("--precision", precision)) if v]
    if resume is not None or rerun is not None:
        if resume is not None and rerun is not None:
            _fail("--resume and --rerun exclude each other")
        if given:
            what = "--resume takes the grid stored in its folder" if resume else "--rerun takes the run's own config"
            _fail(f"{what}; drop {', '.join(given)}")
        if resume is not None:
            _resume_bench(resume, cache_dir, progress, as_json, parallel)
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
        _hardware(raw, accelerator, devices, num_nodes, distributed, precision)
        from seqvae.bench.grid import expand_grid

        axes = {"encoder": encoder, "decoder": decoder, "prior": prior, "schedule": schedule,
                "regularizers": _regularizer_axis(regularizer) if regularizer else None, "strategy": strategy,
                "seed": seed}
        # --set applies last, to every cell, so it can reach into what the axes put there
        # (``--regularizer word-dropout --set regularizers.0.rate=0.5``)
        cells = [apply_overrides(c, list(sets or [])) for c in expand_grid(raw, {k: v for k, v in axes.items() if v})]
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

    if is_rank_zero() and ((out_dir / RESULTS_FILE).exists() or (out_dir / GRID_FILE).exists()) and not overwrite:
        _fail(f"{out_dir}: already holds another bench; continue it with --resume {out_dir}, "
              "or pass --overwrite, or pick --out")
    corpora = _load_corpora(configs, cache_dir)  # bad corpus input stops here, before any training
    log.info("running %d cell(s) into %s", len(configs), out_dir)
    rows = _interruptible(lambda: run_grid(configs, out_dir, cache_dir=cache_dir, progress=_progress_wanted(progress),
                                           corpora=corpora, parallel=parallel), out_dir)
    _report_grid(rows, f"seqvae bench ({suite}) -> {out_dir}", as_json)


def _report_grid(rows: list[dict[str, Any]], title: str, as_json: bool) -> None:
    """Print the grid's rows (table or JSON); exit 1 when a cell failed. Only global rank 0 reports."""
    from seqvae.distributed import is_rank_zero

    if not is_rank_zero():
        return
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        from seqvae.bench.report import results_table

        out.print(results_table(rows, title=title))
        rule = next((r["metrics"]["collapse_rule"] for r in rows if r.get("metrics")), None)
        if rule:
            out.print(f"Collapse verdict: {rule}.")
    if any(r["status"] != "ok" for r in rows):
        raise typer.Exit(1)


INTERRUPTED = 143  # 128 + SIGTERM, what a shell reports for a process stopped by SIGTERM


def _interruptible(grid: Any, out_dir: Path) -> list[dict[str, Any]]:
    """Run ``grid()``; a SIGTERM stops the whole grid with exit code 143 and the command that continues it."""
    from seqvae.training import RunInterrupted

    try:
        return grid()
    except RunInterrupted as exc:
        _fail(f"{exc}; continue the grid with: seqvae bench --resume {out_dir}", code=INTERRUPTED)
        raise  # unreachable: _fail exits


def _check_parallel(parallel: int, configs: list[Any]) -> None:
    """``--parallel`` runs whole cells side by side; a cell that itself uses several devices cannot."""
    if parallel > 1 and any(c.train.world_size > 1 for c in configs):
        _fail("--parallel runs cells side by side on one machine; it does not combine with --devices/--num-nodes > 1")


def _resume_bench(out_dir: Path, cache_dir: Optional[Path], progress: Optional[bool], as_json: bool,
                  parallel: int = 1) -> None:
    """``seqvae bench --resume OUT_DIR``: the stored grid again; finished cells kept, the others resumed."""
    from seqvae.bench.runner import read_grid, run_grid

    try:
        configs = read_grid(out_dir)
    except ConfigError as exc:
        _fail(str(exc))
    _check_parallel(parallel, configs)
    corpora = _load_corpora(configs, cache_dir)
    log.info("resuming %d cell(s) in %s", len(configs), out_dir)
    rows = _interruptible(lambda: run_grid(configs, out_dir, cache_dir=cache_dir, progress=_progress_wanted(progress),
                                           corpora=corpora, resume=True, parallel=parallel), out_dir)
    _report_grid(rows, f"seqvae bench --resume {out_dir}", as_json)


def _rerun(run_dir: Path, out_dir: Optional[Path], overwrite: bool, cache_dir: Optional[Path],
           progress: Optional[bool], as_json: bool) -> None:
    """``seqvae bench --rerun RUN_DIR``: train the stored config again and compare every metric."""
    from seqvae.bench.runner import compare_metrics
    from seqvae.training import run_experiment

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
    again = run_experiment(cfg, target, cache_dir=cache_dir, progress=_progress_wanted(progress), corpus=corpus)
    diffs = compare_metrics(original.get("metrics") or {}, again["metrics"])
    report = {"original": str(run_dir), "rerun": str(target), "reproduced": not diffs, "differences": diffs}
    if as_json:
        sys.stdout.write(json.dumps(report) + "\n")
    elif diffs:
        out.print(f"{target} differs from {run_dir}:")
        for d in diffs:
            out.print(f"  {d['metric']}: {d['original']} -> {d['rerun']}")
    else:
        n = sum(1 for v in again["metrics"].values() if isinstance(v, (int, float)))
        out.print(f"reproduced: all {n} numeric metrics of {run_dir} are equal in {target}")
    if diffs:
        raise typer.Exit(1)


def _set_data_dir(raw: dict[str, Any], data_dir: Path) -> None:
    """Point the config's dataset at ``data_dir`` (absolute, so the run folder stays valid elsewhere)."""
    data = raw.setdefault("data", {})
    spec = data.get("dataset", "synthetic")
    spec = {"kind": spec} if isinstance(spec, str) else dict(spec)
    spec["data_dir"] = str(data_dir.expanduser().resolve())
    data["dataset"] = spec


def _load_corpora(configs: list[Any], cache_dir: Optional[Path]) -> dict[str, Any]:
    """Load each distinct data set of a grid once; bad corpus input exits with code 2."""
    from seqvae.bench.runner import load_corpora
    from seqvae.data.corpora import CorpusError

    try:
        return load_corpora(configs, cache_dir)
    except CorpusError as exc:
        _fail(str(exc))


@app.command(epilog="Example:\n\n  seqvae train --config exp.yaml --set train.max_steps=500 --out runs/exp")
def train(
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON experiment config.")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override, e.g. decoder.num_layers=2.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/train"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh in a run folder that holds a run.")] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the interrupted run in this folder (its own config).")] = None,
    batch_size: BatchOpt = None,
    scale_lr: ScaleLrOpt = None,
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    num_nodes: NodesOpt = None,
    distributed: DistOpt = None,
    precision: PrecisionOpt = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache of generated data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Train and evaluate one model from a config file (or continue an interrupted run with --resume)."""
    _setup_logging(verbose)
    if resume is not None:
        if config is not None or sets or batch_size is not None or scale_lr is not None:
            _fail("--resume continues the run with its own config.json; drop --config/--set/--batch-size/--scale-lr")
        from seqvae.run_dir import RunDir

        stored = RunDir(resume).config_file
        if not resume.is_dir():
            _fail(f"--resume {resume}: no such folder")
        if not stored.exists():
            _fail(f"{resume}: no {stored.name}; is it a seqvae run folder?")
        config, out_dir = stored, resume
    try:
        raw = _raw_config(config, [], None)
        if resume is None:
            _batch(raw, batch_size, scale_lr)
        raw = apply_overrides(raw, list(sets or []))
        if resume is None:
            _hardware(raw, accelerator, devices, num_nodes, distributed, precision)
        elif any(v is not None for v in (accelerator, devices, num_nodes, distributed, precision)):
            _fail("--resume continues the run with its own config.json; drop the hardware flags")
        cfg = validate_experiment(raw, source=str(config or "config"))
    except ConfigError as exc:
        _fail(str(exc))
    from seqvae.distributed import is_rank_zero

    rank0 = is_rank_zero()
    from seqvae.run_dir import RunDir

    if rank0 and resume is None and RunDir(out_dir).exists() and not overwrite:
        state = "a finished run" if RunDir(out_dir).is_finished() else \
            f"an unfinished run (continue it with --resume {out_dir})"
        _fail(f"{out_dir}: already holds {state}; pass --overwrite or pick --out")
    from seqvae.training import NonFiniteLossError, ResumeError, RunInterrupted, run_experiment

    (corpus,) = _load_corpora([cfg], cache_dir).values()
    try:
        result = run_experiment(cfg, out_dir, cache_dir=cache_dir, progress=_progress_wanted(progress), corpus=corpus,
                                resume=resume is not None)
    except ResumeError as exc:
        _fail(f"{exc}; to start afresh: seqvae train --config {out_dir / 'config.json'} --out {out_dir} --overwrite")
    except RunInterrupted as exc:
        _fail(f"{exc}; continue with: seqvae train --resume {out_dir}", code=INTERRUPTED)
    except NonFiniteLossError as exc:
        _fail(f"{out_dir}: {exc}", code=1)
    if not rank0:
        return
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        from seqvae.bench.report import results_table

        out.print(results_table([result], title=f"seqvae train -> {out_dir}"))


@app.command(
    "eval",
    epilog=(
        "Examples:\n\n  seqvae eval runs/bench-x/000-lstm-lstm-gaussian-sigmoid-none-s0\n\n"
        "  seqvae eval run/checkpoint.pt --split valid --iw-samples 50 --json"
    ),
)
def eval_(
    target: Annotated[Path, typer.Argument(help="A run folder (with checkpoint.pt) or a checkpoint file.")],
    split: Annotated[Optional[str], typer.Option("--split", help="train, valid or test (default: the run's).")] = None,
    iw_samples: Annotated[Optional[int], typer.Option("--iw-samples", help="K for IW-NLL (default: the run's; 0 = skip).")] = None,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Read the corpus from here instead of the stored path.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache of generated data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    precision: EvalPrecisionOpt = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Evaluate a trained model: -ELBO, IW-NLL, PPL, KL, MI, AU, shuffle gap, collapse verdict.

    For a run folder the result is also written to ``eval-<split>-k<K>.json`` in that folder
    (``eval-<split>-k<K>-bf16.json`` with ``--precision bf16-mixed``).
    """
    _setup_logging(verbose)
    if precision is not None and precision not in ("32-true", "bf16-mixed"):
        _fail(f"--precision must be 32-true or bf16-mixed, got '{precision}'")
    device = _one_device(accelerator, devices)
    if split is not None and split not in ("valid", "test", "train"):
        _fail(f"--split must be train, valid or test, got '{split}'")
    if iw_samples is not None and iw_samples < 0:
        _fail(f"--iw-samples must be >= 0, got {iw_samples}")
    from seqvae.run_dir import RunDir, atomic_write_json
    from seqvae.training import evaluate_run, load_checkpoint

    path = RunDir(target).checkpoint if target.is_dir() else target

    try:
        model, cfg, vocab = load_checkpoint(path)
    except ValueError as exc:  # ConfigError included: a stored config that no longer validates
        _fail(str(exc))
    if data_dir is not None:
        raw = cfg.model_dump(mode="json")
        _set_data_dir(raw, data_dir)
        try:
            cfg = validate_experiment(raw, source=f"config stored in {path} with --data-dir")
        except ConfigError as exc:
            _fail(str(exc))
    (corpus,) = _load_corpora([cfg], cache_dir).values()
    if corpus.vocab != vocab:
        _fail(
            f"{path}: the checkpoint's vocabulary ({len(vocab)} words) differs from the corpus's "
            f"({len(corpus.vocab)} words); is --data-dir the corpus it was trained on?"
        )
    result = {"checkpoint": str(path), **evaluate_run(model.to(device), cfg, corpus, split=split,
                                                      iw_samples=iw_samples, device=device,
                                                      precision=precision or "32-true",
                                                      checkpoint=path if target.is_dir() else None)}
    result = {**cfg.component_names(), "seed": cfg.train.seed, **result, "collapsed": result["metrics"]["collapsed"], "status": "ok"}
    if target.is_dir():
        atomic_write_json(RunDir(target).eval_record(result["split"], result["metrics"].get("iw_samples", 0),
                                                     result["eval_precision"]), result)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        from seqvae.bench.report import results_table

        out.print(results_table([result], title=f"seqvae eval {path} ({result['split']})"))
        out.print(f"Collapse verdict: {result['metrics']['collapse_rule']}.")


# ------------------------------------------------------------------ generation and the latent space

GENERATION = "Decoding"
StrategyOpt = Annotated[str, typer.Option("--strategy", help="greedy, sample, top-k, top-p or beam.", rich_help_panel=GENERATION)]
MaxLenOpt = Annotated[int, typer.Option("--max-length", help="Most tokens per sentence.", rich_help_panel=GENERATION)]
TempOpt = Annotated[float, typer.Option("--temperature", help="Sampling temperature.", rich_help_panel=GENERATION)]
TopKOpt = Annotated[int, typer.Option("--top-k", help="Words kept by top-k.", rich_help_panel=GENERATION)]
TopPOpt = Annotated[float, typer.Option("--top-p", help="Mass kept by top-p.", rich_help_panel=GENERATION)]
BeamOpt = Annotated[int, typer.Option("--beam-width", help="Beam width.", rich_help_panel=GENERATION)]
PenaltyOpt = Annotated[float, typer.Option("--length-penalty", help="Beam score = log p / length^alpha.", rich_help_panel=GENERATION)]
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice.", rich_help_panel=GENERATION)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.", rich_help_panel=OUTPUT)]
RunArg = Annotated[Path, typer.Argument(help="A run folder (with checkpoint.pt) or a checkpoint file.")]


def _decode_options(strategy: str, max_length: int, temperature: float, top_k: int, top_p: float,
                    beam_width: int, length_penalty: float) -> Any:
    from pydantic import ValidationError

    from seqvae.generation import DecodeConfig

    try:
        return DecodeConfig(strategy=strategy, max_length=max_length, temperature=temperature, top_k=top_k,
                            top_p=top_p, beam_width=beam_width, length_penalty=length_penalty)
    except ValidationError as exc:
        e = exc.errors(include_url=False)[0]
        flag = "--" + str(e["loc"][0]).replace("_", "-")
        _fail(f"{flag}: {e['msg']} (got {e.get('input')!r})")


def _load_run(target: Path, device: Any = None) -> tuple[Any, Any, Any]:
    """Model (on ``device``), config and vocabulary of a run folder or checkpoint; exit 2 on a bad file."""
    from seqvae.run_dir import RunDir
    from seqvae.training import load_checkpoint

    path = RunDir(target).checkpoint if target.is_dir() else target

    try:
        model, cfg, vocab = load_checkpoint(path)
    except ValueError as exc:
        _fail(str(exc))
        raise  # unreachable: _fail exits
    return (model if device is None else model.to(device)), cfg, vocab


def _generator(device: Any, seed: int) -> Any:
    """A generator seeded with ``seed`` on ``device`` (CUDA sampling needs one there)."""
    import torch

    return torch.Generator(device=device).manual_seed(seed)


def _encode(texts: list[Any], cfg: Any, vocab: Any, what: str) -> Any:
    from seqvae.generation import encode_sentences

    ds = cfg.data.dataset
    try:
        enc = encode_sentences(texts, vocab, getattr(ds, "tokenizer", "whitespace"), getattr(ds, "lowercase", False))
    except ValueError as exc:
        _fail(f"{what}: {exc}")
    if enc.unknown:
        err.print(f"{what}: {enc.unknown} word(s) not in the model's vocabulary were read as <unk>", highlight=False)
    return enc


def _read_lines(source: str, cfg: Any) -> list[Any]:
    """Sentences from a file (tokenised as the corpus was) or stdin (``-``); exit 2 on bad input."""
    if source == "-":
        lines = [ln for ln in sys.stdin.read().splitlines() if ln.strip()]
        if not lines:
            _fail("stdin: no sentences (expected one sentence per line)")
        return lines
    from seqvae.data.corpora import CorpusError, read_sentences

    ds = cfg.data.dataset
    try:
        text = read_sentences(source, tokenizer=getattr(ds, "tokenizer", "whitespace"),
                              lowercase=getattr(ds, "lowercase", False), empty_lines="skip")
    except CorpusError as exc:
        _fail(str(exc))
    return text.sentences


def _print(rows: list[dict[str, Any]], columns: list[tuple[str, str]], title: str, as_json: bool, extra: dict) -> None:
    if as_json:
        sys.stdout.write(json.dumps({**extra, "rows": rows}) + "\n")
        return
    from rich.table import Table

    table = Table(title=title)
    for head, _ in columns:
        table.add_column(head, overflow="fold")
    for r in rows:
        table.add_row(*[str(r[key]) for _, key in columns])
    out.print(table)


@app.command(epilog="Example:\n\n  seqvae sample runs/exp -n 5 --strategy top-p --top-p 0.9 --seed 1")
def sample(
    target: RunArg,
    n: Annotated[int, typer.Option("-n", "--num", help="Sentences to sample.")] = 10,
    strategy: StrategyOpt = "greedy", max_length: MaxLenOpt = 50, temperature: TempOpt = 1.0, top_k: TopKOpt = 10,
    top_p: TopPOpt = 0.9, beam_width: BeamOpt = 5, length_penalty: PenaltyOpt = 1.0, seed: SeedOpt = 0,
    as_json: JsonOpt = False, accelerator: AcceleratorOpt = None, devices: DevicesOpt = None,
) -> None:
    """Decode sentences from z drawn from the prior."""
    if n < 1:
        _fail(f"-n must be >= 1, got {n}")
    dcfg = _decode_options(strategy, max_length, temperature, top_k, top_p, beam_width, length_penalty)
    device = _one_device(accelerator, devices)
    model, cfg, vocab = _load_run(target, device)
    if not cfg.has_latent:
        _fail(f"{target}: a language-model baseline has no latent to sample from")
    from seqvae.generation import sample_prior, words

    ids = sample_prior(model, n, dcfg, _generator(device, seed))
    rows = [{"i": i + 1, "sentence": words(s, vocab)} for i, s in enumerate(ids)]
    _print(rows, [("#", "i"), ("sample", "sentence")], f"seqvae sample ({dcfg.strategy})", as_json,
           {"decode": dcfg.model_dump(), "seed": seed})


@app.command(epilog="Examples:\n\n  seqvae reconstruct runs/exp --input sentences.txt\n\n"
                    "  echo 'the cat sat on the mat' | seqvae reconstruct runs/exp --input - --json")
def reconstruct(
    target: RunArg,
    input_: Annotated[str, typer.Option("--input", help="File with one sentence per line, or - for stdin.")] = "-",
    sample_z: Annotated[bool, typer.Option("--sample-z", help="Decode from a sample of q(z|x) instead of its mean.")] = False,
    strategy: StrategyOpt = "greedy", max_length: MaxLenOpt = 50, temperature: TempOpt = 1.0, top_k: TopKOpt = 10,
    top_p: TopPOpt = 0.9, beam_width: BeamOpt = 5, length_penalty: PenaltyOpt = 1.0, seed: SeedOpt = 0,
    as_json: JsonOpt = False, accelerator: AcceleratorOpt = None, devices: DevicesOpt = None,
) -> None:
    """Encode each sentence, decode it again, and show both."""
    dcfg = _decode_options(strategy, max_length, temperature, top_k, top_p, beam_width, length_penalty)
    device = _one_device(accelerator, devices)
    model, cfg, vocab = _load_run(target, device)
    from seqvae.generation import reconstruct as rec, words

    enc = _encode(_read_lines(input_, cfg), cfg, vocab, "stdin" if input_ == "-" else input_)
    ids = rec(model, enc, vocab, dcfg, sample=sample_z, generator=_generator(device, seed))
    rows = [{"input": s, "reconstruction": words(r, vocab)} for s, r in zip(enc.sentences, ids)]
    _print(rows, [("input", "input"), ("reconstruction", "reconstruction")], "seqvae reconstruct", as_json,
           {"unknown_words": enc.unknown, "z": "sample" if sample_z else "mean", "decode": dcfg.model_dump()})


@app.command(epilog="Example:\n\n  seqvae interpolate runs/exp \"the market fell\" \"stocks rose sharply\" --steps 8")
def interpolate(
    target: RunArg,
    first: Annotated[str, typer.Argument(help="Sentence at a = 0.")],
    second: Annotated[str, typer.Argument(help="Sentence at a = 1.")],
    steps: Annotated[int, typer.Option("--steps", help="Points on the path, both ends included.")] = 8,
    strategy: StrategyOpt = "greedy", max_length: MaxLenOpt = 50, temperature: TempOpt = 1.0, top_k: TopKOpt = 10,
    top_p: TopPOpt = 0.9, beam_width: BeamOpt = 5, length_penalty: PenaltyOpt = 1.0, seed: SeedOpt = 0,
    as_json: JsonOpt = False, accelerator: AcceleratorOpt = None, devices: DevicesOpt = None,
) -> None:
    """Decode z(a) = (1 - a) z_1 + a z_2 between two sentences' posterior means (the homotopy)."""
    if steps < 2:
        _fail(f"--steps must be >= 2, got {steps}")
    dcfg = _decode_options(strategy, max_length, temperature, top_k, top_p, beam_width, length_penalty)
    device = _one_device(accelerator, devices)
    model, cfg, vocab = _load_run(target, device)
    if not cfg.has_latent:
        _fail(f"{target}: a language-model baseline has no latent to interpolate in")
    from seqvae.generation import interpolate as interp, words

    enc = _encode([first, second], cfg, vocab, "input")
    path = interp(model, enc, vocab, steps, dcfg, _generator(device, seed))
    rows = [{"a": f"{a:.3f}", "sentence": words(s, vocab)} for a, s in path]
    _print(rows, [("a", "a"), ("sentence", "sentence")], "seqvae interpolate", as_json,
           {"inputs": [first, second], "unknown_words": enc.unknown, "decode": dcfg.model_dump()})


@app.command(epilog="Example:\n\n  seqvae attribute runs/yelp --positive sentiment.dev.1 --negative sentiment.dev.0 "
                    "--apply \"the food was cold\" --scale 1.5")
def attribute(
    target: RunArg,
    positive: Annotated[Path, typer.Option("--positive", help="Sentences with the attribute, one per line.")],
    negative: Annotated[Path, typer.Option("--negative", help="Sentences without it, one per line.")],
    apply: Annotated[list[str], typer.Option("--apply", help="Sentence to shift (repeatable).")],
    scale: Annotated[float, typer.Option("--scale", help="z + scale * (mean z+ - mean z-).")] = 1.0,
    strategy: StrategyOpt = "greedy", max_length: MaxLenOpt = 50, temperature: TempOpt = 1.0, top_k: TopKOpt = 10,
    top_p: TopPOpt = 0.9, beam_width: BeamOpt = 5, length_penalty: PenaltyOpt = 1.0, seed: SeedOpt = 0,
    as_json: JsonOpt = False, accelerator: AcceleratorOpt = None, devices: DevicesOpt = None,
) -> None:
    """Compute an attribute vector (mean z of --positive minus mean z of --negative) and add it to sentences."""
    dcfg = _decode_options(strategy, max_length, temperature, top_k, top_p, beam_width, length_penalty)
    device = _one_device(accelerator, devices)
    model, cfg, vocab = _load_run(target, device)
    if not cfg.has_latent:
        _fail(f"{target}: a language-model baseline has no latent for an attribute vector")
    from seqvae.generation import apply_attribute, attribute_vector, reconstruct as rec, words

    pos = _encode(_read_lines(str(positive), cfg), cfg, vocab, str(positive))
    neg = _encode(_read_lines(str(negative), cfg), cfg, vocab, str(negative))
    enc = _encode(list(apply), cfg, vocab, "--apply")
    vector = attribute_vector(model, pos, neg, vocab)
    g = _generator(device, seed)
    plain = rec(model, enc, vocab, dcfg, generator=g)
    shifted = apply_attribute(model, enc, vocab, vector, scale, dcfg, _generator(device, seed))
    rows = [{"input": s, "reconstruction": words(p, vocab), "shifted": words(t, vocab)}
            for s, p, t in zip(enc.sentences, plain, shifted)]
    _print(rows, [("input", "input"), ("reconstruction", "reconstruction"), (f"+ {scale:g} x vector", "shifted")],
           "seqvae attribute", as_json,
           {"vector_norm": float(vector.norm()), "n_positive": len(pos.ids), "n_negative": len(neg.ids),
            "scale": scale, "unknown_words": enc.unknown, "decode": dcfg.model_dump()})


@plugins_app.command("list")
def plugins_list(
    kind: Annotated[Optional[str], typer.Option("--kind", help="Only this kind (encoder, decoder, ...).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON array.")] = False,
    check: Annotated[bool, typer.Option("--check", help="Import every entry to verify it (imports torch).")] = False,
) -> None:
    """List every registered component by kind with its package, version and status.

    Without --check only package metadata is read: nothing is imported. Status is ``ok``,
    ``shadowed`` (a plugin with a built-in's name), ``ambiguous`` (several plugins share the name;
    use the ``package:name`` alias) or ``broken`` (with the cause).
    """
    from seqvae.registry import KINDS, get_registry

    kinds = list(KINDS)
    if kind is not None:
        if kind not in KINDS:
            _fail(f"Unknown kind '{kind}'. Kinds: {', '.join(KINDS)}.")
        kinds = [kind]
    entries = []
    for k in kinds:
        reg = get_registry(k)
        entries += reg.check() if check else reg.entries()
    if as_json:
        sys.stdout.write(json.dumps([e.as_dict() for e in entries]) + "\n")
        return
    from rich.table import Table

    table = Table(title="seqvae components")
    for col in ("kind", "name", "package", "version", "status"):
        table.add_column(col)
    for e in entries:
        status = e.status if not e.error else f"{e.status}: {e.error}"
        table.add_row(e.kind, e.name, e.dist, e.version, status)
    out.print(table)
    if check and any(e.status == "broken" for e in entries):
        raise typer.Exit(1)


@plugins_app.command("show", epilog="Examples:\n\n  seqvae plugins show free-bits\n\n  seqvae plugins show lstm --kind decoder --json")
def plugins_show(
    name: Annotated[str, typer.Argument(help="Component name (or package:name).")],
    kind: Annotated[Optional[str], typer.Option("--kind", help="encoder, decoder, ... (needed when several kinds share the name).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show a component's package, version, description and config fields (types, defaults, constraints)."""
    from seqvae.registry import KINDS, RegistryError, get_registry
    from seqvae.schema import component_info

    if kind is not None and kind not in KINDS:
        _fail(f"Unknown kind '{kind}'. Kinds: {', '.join(KINDS)}.")
    kinds = [kind] if kind else [k for k in KINDS if name.split(":")[-1] in get_registry(k).names()]
    if not kinds:
        import difflib

        every = sorted({n for k in KINDS for n in get_registry(k).names()})
        close = difflib.get_close_matches(name, every, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        _fail(f"No component named '{name}'.{hint} `seqvae plugins list` shows them all.")
    infos = []
    for k in kinds:
        try:
            infos.append(component_info(k, name))
        except (RegistryError, StopIteration) as exc:
            _fail(str(exc) or f"No {k} named '{name}'.")
    if as_json:
        sys.stdout.write(json.dumps(infos if len(infos) > 1 else infos[0], default=str) + "\n")
        return
    from rich.table import Table

    for info in infos:
        out.print(f"[bold]{info['kind']} {info['name']}[/] — {info['package']} {info['version']}"
                  f"{' (built-in)' if info['builtin'] else ''} · {info['entry_point']}", highlight=False)
        if info["summary"]:
            out.print(info["summary"], highlight=False)
        table = Table()
        for col in ("field", "type", "default", "constraints", "description"):
            table.add_column(col, overflow="fold")
        for f in info["fields"]:
            table.add_row(f["name"], f["type"], repr(f["default"]) if f["default"] != "(required)" else "(required)",
                          f["constraints"], f["description"])
        if info["fields"]:
            out.print(table)
        else:
            out.print("No config fields.")


@config_app.command("schema", epilog="Example:\n\n  seqvae config schema --out seqvae.schema.json")
def config_schema(
    out_file: Annotated[Optional[Path], typer.Option("--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of the experiment config, built from the installed components."""
    from seqvae.schema import experiment_schema

    text = json.dumps(experiment_schema(), indent=2) + "\n"
    if out_file is None:
        sys.stdout.write(text)
    else:
        out_file.write_text(text)
        err.print(f"wrote {out_file}", highlight=False)


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
