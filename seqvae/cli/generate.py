"""``seqvae sample``, ``reconstruct``, ``interpolate``, ``attribute``: the latent space of a trained model.

The decoding options are declared once (``DECODE_OPTIONS``) and given to each command by
``decoding_command``, which hands the command one validated ``DecodeConfig``.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from seqvae.cli._common import OUTPUT, AcceleratorOpt, DevicesOpt, _check_format, _fail, _one_device, app, err, out


GENERATION = "Decoding"
#: The decoding options, declared once: flag name -> (default, help). ``decoding_command`` adds them
#: to a command and validates them into one ``DecodeConfig`` (its fields have the same names).
DECODE_OPTIONS: dict[str, tuple[Any, str]] = {
    "mode": ("greedy", "greedy, sample, top-k, top-p or beam."),
    "max_length": (50, "Most tokens per sentence."),
    "temperature": (1.0, "Sampling temperature."),
    "top_k": (10, "Words kept by top-k."),
    "top_p": (0.9, "Mass kept by top-p."),
    "beam_width": (5, "Beam width."),
    "length_penalty": (1.0, "Beam score = log p / length^alpha."),
}
_FLAGS = {"mode": "--decode"}  # every other option's flag is its name with dashes
SeedOpt = Annotated[int, typer.Option("--seed", help="Seed of every random choice.", rich_help_panel=GENERATION)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.", rich_help_panel=OUTPUT)]
LinesFormatOpt = Annotated[str, typer.Option(
    "--format", help="table, plain (one sentence per line: the output column) or tsv (every column, for scripts).",
    rich_help_panel=OUTPUT)]
RunArg = Annotated[Path, typer.Argument(help="A run folder (with checkpoint.pt) or a checkpoint file.")]


def _flag(name: str) -> str:
    return _FLAGS.get(name, "--" + name.replace("_", "-"))


def _decode_config(options: dict[str, Any]) -> Any:
    """The validated ``DecodeConfig`` of the decoding options; exit 2 naming the flag on a bad value."""
    from pydantic import ValidationError

    from seqvae.generation import DecodeConfig

    try:
        return DecodeConfig(**options)
    except ValidationError as exc:
        e = exc.errors(include_url=False)[0]
        _fail(f"{_flag(str(e['loc'][0]))}: {e['msg']} (got {e.get('input')!r})")


def decoding_command(fn: Callable[..., None]) -> Callable[..., None]:
    """Give the command ``fn`` the decoding options of ``DECODE_OPTIONS``, called with their ``dcfg``.

    ``fn`` declares a ``dcfg`` parameter instead of the seven options; the wrapper's signature (what
    Typer reads) lists them after ``fn``'s own, and the wrapper turns them into one ``DecodeConfig``.
    """
    sig = inspect.signature(fn, eval_str=True)
    own = [p for name, p in sig.parameters.items() if name != "dcfg"]
    added = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Annotated[
                type(default), typer.Option(_flag(name), help=text, rich_help_panel=GENERATION)])
             for name, (default, text) in DECODE_OPTIONS.items()]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        _check_format(kwargs.get("fmt", "table"))  # before the model is loaded
        options = {name: kwargs.pop(name) for name in DECODE_OPTIONS}
        fn(dcfg=_decode_config(options), **kwargs)

    params = own + added
    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


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


def _print(rows: list[dict[str, Any]], columns: list[tuple[str, str]], title: str, as_json: bool, extra: dict,
           fmt: str = "table") -> None:
    """The rows as JSON, a table, ``plain`` (the last column only: one sentence per line) or ``tsv``."""
    if as_json:
        sys.stdout.write(json.dumps({**extra, "rows": rows}) + "\n")
        return
    if fmt == "plain":
        sys.stdout.write("".join(f"{r[columns[-1][1]]}\n" for r in rows))
        return
    if fmt == "tsv":
        lines = ["\t".join(head for head, _ in columns)]
        lines += ["\t".join(str(r[key]).replace("\t", " ") for _, key in columns) for r in rows]
        sys.stdout.write("\n".join(lines) + "\n")
        return
    from rich.table import Table

    table = Table(title=title)
    for head, _ in columns:
        table.add_column(head, overflow="fold")
    for r in rows:
        table.add_row(*[str(r[key]) for _, key in columns])
    out.print(table)


@app.command(epilog="Example:\n\n  seqvae sample runs/exp -n 5 --decode top-p --top-p 0.9 --seed 1")
@decoding_command
def sample(
    target: RunArg,
    n: Annotated[int, typer.Option("-n", "--num", help="Sentences to sample.")] = 10,
    dcfg: Any = None, seed: SeedOpt = 0,
    as_json: JsonOpt = False, fmt: LinesFormatOpt = "table", accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
) -> None:
    """Decode sentences from z drawn from the prior."""
    if n < 1:
        _fail(f"-n must be >= 1, got {n}")
    device = _one_device(accelerator, devices)
    model, cfg, vocab = _load_run(target, device)
    if not cfg.has_latent:
        _fail(f"{target}: a language-model baseline has no latent to sample from")
    from seqvae.generation import sample_prior, words

    ids = sample_prior(model, n, dcfg, seed=seed)  # sample i does not depend on -n
    rows = [{"i": i + 1, "sentence": words(s, vocab)} for i, s in enumerate(ids)]
    _print(rows, [("#", "i"), ("sample", "sentence")], f"seqvae sample ({dcfg.mode})", as_json,
           {"decode": dcfg.model_dump(), "seed": seed}, fmt)


@app.command(epilog="Examples:\n\n  seqvae reconstruct runs/exp --input sentences.txt\n\n"
                    "  echo 'the cat sat on the mat' | seqvae reconstruct runs/exp --input - --json")
@decoding_command
def reconstruct(
    target: RunArg,
    input_: Annotated[str, typer.Option("--input", help="File with one sentence per line, or - for stdin.")] = "-",
    sample_z: Annotated[bool, typer.Option("--sample-z", help="Decode from a sample of q(z|x) instead of its mean.")] = False,
    dcfg: Any = None, seed: SeedOpt = 0,
    as_json: JsonOpt = False, fmt: LinesFormatOpt = "table", accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
) -> None:
    """Encode each sentence, decode it again, and show both."""
    device = _one_device(accelerator, devices)
    model, cfg, vocab = _load_run(target, device)
    from seqvae.generation import reconstruct as rec, words

    enc = _encode(_read_lines(input_, cfg), cfg, vocab, "stdin" if input_ == "-" else input_)
    ids = rec(model, enc, vocab, dcfg, sample=sample_z, generator=_generator(device, seed))
    rows = [{"input": s, "reconstruction": words(r, vocab)} for s, r in zip(enc.sentences, ids)]
    _print(rows, [("input", "input"), ("reconstruction", "reconstruction")], "seqvae reconstruct", as_json,
           {"unknown_words": enc.unknown, "z": "sample" if sample_z else "mean", "decode": dcfg.model_dump()}, fmt)


@app.command(epilog="Example:\n\n  seqvae interpolate runs/exp \"the market fell\" \"stocks rose sharply\" --steps 8")
@decoding_command
def interpolate(
    target: RunArg,
    first: Annotated[str, typer.Argument(help="Sentence at a = 0.")],
    second: Annotated[str, typer.Argument(help="Sentence at a = 1.")],
    steps: Annotated[int, typer.Option("--steps", help="Points on the path, both ends included.")] = 8,
    dcfg: Any = None, seed: SeedOpt = 0,
    as_json: JsonOpt = False, fmt: LinesFormatOpt = "table", accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
) -> None:
    """Decode z(a) = (1 - a) z_1 + a z_2 between two sentences' posterior means (the homotopy)."""
    if steps < 2:
        _fail(f"--steps must be >= 2, got {steps}")
    device = _one_device(accelerator, devices)
    model, cfg, vocab = _load_run(target, device)
    if not cfg.has_latent:
        _fail(f"{target}: a language-model baseline has no latent to interpolate in")
    from seqvae.generation import interpolate as interp, words

    enc = _encode([first, second], cfg, vocab, "input")
    path = interp(model, enc, vocab, steps, dcfg, _generator(device, seed))
    rows = [{"a": f"{a:.3f}", "sentence": words(s, vocab)} for a, s in path]
    _print(rows, [("a", "a"), ("sentence", "sentence")], "seqvae interpolate", as_json,
           {"inputs": [first, second], "unknown_words": enc.unknown, "decode": dcfg.model_dump()}, fmt)


@app.command(epilog="Example:\n\n  seqvae attribute runs/yelp --positive sentiment.dev.1 --negative sentiment.dev.0 "
                    "--apply \"the food was cold\" --scale 1.5")
@decoding_command
def attribute(
    target: RunArg,
    positive: Annotated[Path, typer.Option("--positive", help="Sentences with the attribute, one per line.")],
    negative: Annotated[Path, typer.Option("--negative", help="Sentences without it, one per line.")],
    apply: Annotated[list[str], typer.Option("--apply", help="Sentence to shift (repeatable).")],
    scale: Annotated[float, typer.Option("--scale", help="z + scale * (mean z+ - mean z-).")] = 1.0,
    dcfg: Any = None, seed: SeedOpt = 0,
    as_json: JsonOpt = False, fmt: LinesFormatOpt = "table", accelerator: AcceleratorOpt = None,
    devices: DevicesOpt = None,
) -> None:
    """Compute an attribute vector (mean z of --positive minus mean z of --negative) and add it to sentences."""
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
            "scale": scale, "unknown_words": enc.unknown, "decode": dcfg.model_dump()}, fmt)
