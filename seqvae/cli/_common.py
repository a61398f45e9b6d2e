"""What every ``seqvae`` command shares: the app, the consoles, the one-line errors, the common options.

Importing the CLI (``seqvae --help``, ``seqvae plugins list``) does not import torch: heavy imports
happen inside the commands.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console

from seqvae.config import apply_overrides, deep_merge, load_config_file

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


def _piped_width() -> int | None:
    """Output width: the terminal's; when piped, ``COLUMNS`` if set, else 200 (nothing wraps in a file)."""
    if sys.stdout.isatty():
        return None
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else 200


out = Console(width=_piped_width())
err = Console(stderr=True)
log = logging.getLogger("seqvae")

ProgressOpt = Annotated[Optional[bool], typer.Option(
    "--progress/--no-progress", help="A progress bar (default: on a terminal); without one, a log line a minute.")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.")]


def _flags_show_no_type() -> None:
    """Typer shows ``<bool>`` beside every flag, which takes no value; show nothing there instead."""
    try:
        from typer.core import TyperOption
    except ImportError:  # another Typer layout: its own rendering stays
        return
    shown = getattr(TyperOption, "display_type_rich", None)
    if shown is None or getattr(shown, "_seqvae", False):
        return

    def display_type_rich(self: Any, ctx: Any) -> Any:
        return "" if getattr(self, "is_flag", False) else shown(self, ctx)

    display_type_rich._seqvae = True  # type: ignore[attr-defined]
    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_flags_show_no_type()
FormatOpt = Annotated[str, typer.Option(
    "--format", help="table (plain when the terminal is too narrow for it), plain (short lines) or tsv (for scripts).",
    rich_help_panel="Output")]


LoggerOpt = Annotated[Optional[list[str]], typer.Option(
    "--logger", help="Also log to tensorboard, wandb or mlflow (repeatable; sets train.loggers). The CSV log is always written.",
    rich_help_panel="Output")]


def _loggers(raw: dict[str, Any], loggers: Optional[list[str]]) -> None:
    """Put ``--logger`` values into ``raw['train']['loggers']`` (validated with the rest of the config)."""
    if loggers:
        raw.setdefault("train", {})["loggers"] = list(loggers)


def _check_format(fmt: str) -> str:
    if fmt not in ("table", "plain", "tsv"):
        _fail(f"--format must be table, plain or tsv, got '{fmt}'")
    return fmt


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
    "--precision", help="32-true or bf16-mixed (bf16 autocast, float32 reductions); default: the run's eval.precision.",
    rich_help_panel=HARDWARE)]


def _check_before_writing(out_dir: Path, configs: list[Any], flag: str = "--out") -> None:
    """What would fail after the run folder is written, checked before anything is: exit 2 with one line.

    ``out_dir`` must be a folder (or not exist yet) under a writable parent; a config that trains
    on ``gpu`` needs a CUDA device that torch can see.
    """
    if out_dir.exists() and not out_dir.is_dir():
        _fail(f"{flag} {out_dir}: is a file, not a folder")
    parent = out_dir
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        _fail(f"{flag} {out_dir}: {parent} is not writable")
    if any(c.train.accelerator == "gpu" for c in configs):
        import torch

        if not torch.cuda.is_available():
            _fail("train.accelerator gpu: torch sees no CUDA device (torch.cuda.is_available() is False); "
                  "use --accelerator cpu or auto")


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
        raw = deep_merge(raw, user)
    return _resolve_data_dir(apply_overrides(raw, sets))


def _resolve_data_dir(raw: dict[str, Any]) -> dict[str, Any]:
    """A relative ``data.dataset.data_dir`` made absolute (from the working folder), as the run folder stores it.

    Stored as written, ``seqvae eval RUN`` from another folder would look for the corpus in the wrong place.
    """
    spec = (raw.get("data") or {}).get("dataset") if isinstance(raw.get("data"), dict) else None
    if isinstance(spec, dict) and isinstance(spec.get("data_dir"), str) and spec["data_dir"]:
        path = Path(spec["data_dir"]).expanduser()
        if not path.is_absolute():
            spec["data_dir"] = str(path.resolve())
    return raw


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
