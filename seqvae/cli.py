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
plugins_app = typer.Typer(help="Registered components (built-ins and plugins).", no_args_is_help=True)
app.add_typer(plugins_app, name="plugins")

out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True)
log = logging.getLogger("seqvae")

COMPONENTS = "Components (repeat a flag to add a grid axis)"
TRAINING = "Training"
OUTPUT = "Output"


def _fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
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
    iw_samples: Annotated[Optional[int], typer.Option("--iw-samples", help="K for IW-NLL (default 500; 0 = skip).", rich_help_panel=TRAINING)] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON experiment config merged over the suite.", rich_help_panel=TRAINING)] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override, e.g. decoder.num_layers=2.", rich_help_panel=TRAINING)] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/bench-<time>).", rich_help_panel=OUTPUT)] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse an output folder that holds results.", rich_help_panel=OUTPUT)] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the results as one JSON array.", rich_help_panel=OUTPUT)] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Validate and print the grid, run nothing.", rich_help_panel=OUTPUT)] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache of generated data ($SEQVAE_CACHE).", rich_help_panel=OUTPUT)] = None,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress", help="Progress bars (default: on a terminal).", rich_help_panel=OUTPUT)] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose", help="Debug logs and tracebacks.", rich_help_panel=OUTPUT)] = False,
) -> None:
    """Train and evaluate a grid of models and print the posterior-collapse metrics."""
    _setup_logging(verbose)
    try:
        raw = _raw_config(config, list(sets or []), suite)
        if dataset:
            raw.setdefault("data", {})["dataset"] = dataset
        if data_dir is not None:
            _set_data_dir(raw, data_dir)
        if max_steps is not None:
            raw.setdefault("train", {})["max_steps"] = max_steps
        if iw_samples is not None:
            raw.setdefault("eval", {})["iw_samples"] = iw_samples
        from seqvae.composer import expand_grid

        axes = {"encoder": encoder, "decoder": decoder, "prior": prior, "schedule": schedule,
                "regularizers": _regularizer_axis(regularizer) if regularizer else None, "strategy": strategy,
                "seed": seed}
        cells = expand_grid(raw, {k: v for k, v in axes.items() if v})
        configs = []
        for i, cell in enumerate(cells):
            source = str(config) if config is not None else "config"
            if len(cells) > 1:
                source += f" (grid cell {i})"
            configs.append(validate_experiment(cell, source=source))
    except ConfigError as exc:
        _fail(str(exc))
    from seqvae.bench.runner import cell_name, run_grid

    if dry_run:
        if as_json:
            sys.stdout.write(json.dumps([c.model_dump(mode="json") for c in configs]) + "\n")
        else:
            for i, c in enumerate(configs):
                out.print(cell_name(i, c))
        raise typer.Exit(0)
    out_dir = out_dir or Path("runs") / time.strftime("bench-%Y%m%d-%H%M%S")
    results = out_dir / "results.jsonl"
    if results.exists() and not overwrite:
        _fail(f"{out_dir}: already holds results.jsonl from another bench; pass --overwrite or pick --out")
    corpora = _load_corpora(configs, cache_dir)  # bad corpus input stops here, before any training
    results.unlink(missing_ok=True)
    log.info("running %d cell(s) into %s", len(configs), out_dir)
    rows = run_grid(configs, out_dir, cache_dir=cache_dir, progress=_progress_wanted(progress), corpora=corpora)
    if as_json:
        sys.stdout.write(json.dumps(rows) + "\n")
    else:
        from seqvae.bench.report import results_table

        out.print(results_table(rows, title=f"seqvae bench ({suite}) -> {out_dir}"))
        rule = next((r["metrics"]["collapse_rule"] for r in rows if r.get("metrics")), None)
        if rule:
            out.print(f"Collapse verdict: {rule}.")
    if any(r["status"] != "ok" for r in rows):
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
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Reuse a run folder that holds a result.")] = False,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache of generated data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    progress: Annotated[Optional[bool], typer.Option("--progress/--no-progress")] = None,
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Train and evaluate one model from a config file."""
    _setup_logging(verbose)
    try:
        cfg = validate_experiment(_raw_config(config, list(sets or []), None), source=str(config or "config"))
    except ConfigError as exc:
        _fail(str(exc))
    if (out_dir / "result.json").exists() and not overwrite:
        _fail(f"{out_dir}: already holds a finished run; pass --overwrite or pick --out")
    from seqvae.training import run_experiment

    (corpus,) = _load_corpora([cfg], cache_dir).values()
    result = run_experiment(cfg, out_dir, cache_dir=cache_dir, progress=_progress_wanted(progress), corpus=corpus)
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
    verbose: Annotated[bool, typer.Option("-v", "--verbose")] = False,
) -> None:
    """Evaluate a trained model: -ELBO, IW-NLL, PPL, KL, MI, AU, shuffle gap, collapse verdict.

    For a run folder the result is also written to ``eval-<split>-k<K>.json`` in that folder.
    """
    _setup_logging(verbose)
    if split is not None and split not in ("valid", "test", "train"):
        _fail(f"--split must be train, valid or test, got '{split}'")
    if iw_samples is not None and iw_samples < 0:
        _fail(f"--iw-samples must be >= 0, got {iw_samples}")
    path = target / "checkpoint.pt" if target.is_dir() else target
    from seqvae.training import evaluate_run, load_checkpoint

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
    result = {"checkpoint": str(path), **evaluate_run(model, cfg, corpus, split=split, iw_samples=iw_samples)}
    result = {**cfg.component_names(), "seed": cfg.train.seed, **result, "collapsed": result["metrics"]["collapsed"], "status": "ok"}
    if target.is_dir():
        k = result["metrics"].get("iw_samples", 0)
        (target / f"eval-{result['split']}-k{k}.json").write_text(json.dumps(result, indent=2))
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        from seqvae.bench.report import results_table

        out.print(results_table([result], title=f"seqvae eval {path} ({result['split']})"))
        out.print(f"Collapse verdict: {result['metrics']['collapse_rule']}.")


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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
