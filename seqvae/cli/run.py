"""``seqvae train`` (one run, or --resume an interrupted one) and ``seqvae eval`` (the metrics of a trained model)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from seqvae.cli._common import (
    AcceleratorOpt, BatchOpt, DevicesOpt, DistOpt, EvalPrecisionOpt, FormatOpt, LoggerOpt, NodesOpt, PrecisionOpt, ProgressOpt, ScaleLrOpt,
    VerboseOpt, _batch, _check_before_writing, _check_format, _loggers, _fail, _hardware, _load_corpora, _one_device, _progress_wanted,
    _raw_config, _resolve_data_dir, _set_data_dir, _setup_logging, app, out,
)
from seqvae.cli.bench import INTERRUPTED
from seqvae.config import ConfigError, apply_overrides, validate_experiment


@app.command(epilog="Example:\n\n  seqvae train --config exp.yaml --set train.max_steps=500 --out runs/exp")
def train(
    config: Annotated[Optional[Path], typer.Option("--config", help="YAML/JSON experiment config.")] = None,
    sets: Annotated[Optional[list[str]], typer.Option("--set", help="Override, e.g. decoder.num_layers=2.")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Run folder.")] = Path("runs/train"),
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Start afresh in a run folder that holds a run.")] = False,
    resume: Annotated[Optional[Path], typer.Option("--resume", help="Continue the interrupted run in this folder (its own config).")] = None,
    batch_size: BatchOpt = None,
    scale_lr: ScaleLrOpt = None,
    logger: LoggerOpt = None,
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    num_nodes: NodesOpt = None,
    distributed: DistOpt = None,
    precision: PrecisionOpt = None,
    cache_dir: Annotated[Optional[Path], typer.Option("--cache-dir", help="Cache of generated data.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    fmt: FormatOpt = "table",
    progress: ProgressOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Train and evaluate one model from a config file (or continue an interrupted run with --resume)."""
    _setup_logging(verbose)
    _check_format(fmt)
    if resume is not None:
        if config is not None or sets or batch_size is not None or scale_lr is not None or logger:
            _fail("--resume continues the run with its own config.json; drop --config/--set/--batch-size/--scale-lr/--logger")
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
            _loggers(raw, logger)
        raw = _resolve_data_dir(apply_overrides(raw, list(sets or [])))
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

    _check_before_writing(out_dir, [cfg])
    if rank0 and resume is None and RunDir(out_dir).exists() and not overwrite:
        state = "a finished run" if RunDir(out_dir).is_finished() else \
            f"an unfinished run (continue it with --resume {out_dir})"
        _fail(f"{out_dir}: already holds {state}; pass --overwrite or pick --out")
    from seqvae.interfaces import ComponentError
    from seqvae.training import NonFiniteLossError, ResumeError, RunInterrupted, run_experiment

    (corpus,) = _load_corpora([cfg], cache_dir).values()
    try:
        result = run_experiment(cfg, out_dir, cache_dir=cache_dir, progress=_progress_wanted(progress), corpus=corpus,
                                resume=resume is not None)
    except ConfigError as exc:  # the config asks for what this corpus lacks (a valid split for val_every)
        _fail(str(exc))
    except ResumeError as exc:
        _fail(f"{exc}; to start afresh: seqvae train --config {RunDir(out_dir).config_file} --out {out_dir} --overwrite")
    except RunInterrupted as exc:
        _fail(f"{exc}; continue with: seqvae train --resume {out_dir}", code=getattr(exc, "exit_code", INTERRUPTED))
    except NonFiniteLossError as exc:
        _fail(f"{out_dir}: {exc}", code=1)
    except ComponentError as exc:  # a component (often a plugin) broke its contract: name it, no traceback
        _fail(f"{out_dir}: {exc}", code=1)
    if not rank0:
        return
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        from seqvae.bench.report import render_results

        render_results(out, [result], f"seqvae train -> {out_dir}", fmt)


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
    fmt: FormatOpt = "table",
    accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
    precision: EvalPrecisionOpt = None,
    verbose: VerboseOpt = False,
) -> None:
    """Evaluate a trained model: -ELBO, IW-NLL, PPL, KL, MI, AU, shuffle gap, collapse verdict.

    For a run folder the result is also written to eval-<split>-k<K>.json in that folder
    (eval-<split>-k<K>-bf16.json with --precision bf16-mixed).
    """
    _setup_logging(verbose)
    _check_format(fmt)
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
    wanted = split or cfg.eval.split
    if wanted not in corpus.splits:
        _fail(f"--split {wanted}: the corpus of {path} has no {wanted} split (it has: {', '.join(corpus.splits)})")
    result = {"checkpoint": str(path), **evaluate_run(model.to(device), cfg, corpus, split=split,
                                                      iw_samples=iw_samples, device=device,
                                                      precision=precision,
                                                      checkpoint=path if target.is_dir() else None)}
    result = {**cfg.component_names(), "seed": cfg.train.seed, **result, "collapsed": result["metrics"]["collapsed"], "status": "ok"}
    if target.is_dir():
        atomic_write_json(RunDir(target).eval_record(result["split"], result["metrics"].get("iw_samples", 0),
                                                     result["eval_precision"]), result)
    if as_json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        from seqvae.bench.report import render_results

        render_results(out, [result], f"seqvae eval {path} ({result['split']})", fmt)
        if fmt != "tsv":
            out.print(f"Collapse verdict: {result['metrics']['collapse_rule']}.")


# ------------------------------------------------------------------ generation and the latent space
