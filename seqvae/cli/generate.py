"""``seqvae sample``, ``reconstruct``, ``interpolate``, ``attribute``: the latent space of a trained model.

The decoding options (``DECODE_OPTIONS``) and the options every generation command shares
(``SHARED_OPTIONS``: seed, output, hardware) are declared once; ``generation_command`` gives them to
each command, which receives one ``Generation``: the validated ``DecodeConfig``, the options, and
the run, loaded on first use.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Callable

import typer

from seqvae.cli._common import OUTPUT, AcceleratorOpt, DevicesOpt, _check_format, _fail, _one_device, app, err, out


GENERATION = "Decoding"
#: The decoding options, declared once: flag name -> (default, help). ``generation_command`` adds them
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


@dataclass
class Generation:
    """What a generation command gets: the decoding config, the shared options and (on first use) the run."""

    target: Path
    dcfg: Any
    seed: int
    as_json: bool
    fmt: str
    device: Any
    _loaded: tuple[Any, Any, Any] | None = None

    def _load(self) -> tuple[Any, Any, Any]:
        if self._loaded is None:
            self._loaded = _load_run(self.target, self.device)
        return self._loaded

    @property
    def model(self) -> Any:
        return self._load()[0]

    @property
    def cfg(self) -> Any:
        return self._load()[1]

    @property
    def vocab(self) -> Any:
        return self._load()[2]

    def require_latent(self, what: str) -> None:
        """Exit 2 for a language-model baseline, which has no latent ``what`` needs."""
        if not self.cfg.has_latent:
            _fail(f"{self.target}: a language-model baseline has no latent {what}")

    def generator(self) -> Any:
        """A fresh generator seeded with ``--seed`` on the device."""
        return _generator(self.device, self.seed)

    def encode(self, texts: list[Any], what: str) -> Any:
        return _encode(texts, self.cfg, self.vocab, what)

    def words(self, ids: list[int]) -> str:
        from seqvae.generation import words

        return words(ids, self.vocab)

    def show(self, rows: list[dict[str, Any]], columns: list[tuple[str, str]], title: str, extra: dict) -> None:
        _print(rows, columns, title, self.as_json, {**extra, "decode": self.dcfg.model_dump()}, self.fmt)


#: The options every generation command shares besides the decoding ones: name -> (default, annotation).
SHARED_OPTIONS: dict[str, tuple[Any, Any]] = {
    "seed": (0, Annotated[int, typer.Option("--seed", help="Seed of every random choice.", rich_help_panel=GENERATION)]),
    "as_json": (False, Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.",
                                                   rich_help_panel=OUTPUT)]),
    "fmt": ("table", Annotated[str, typer.Option(
        "--format", help="table, plain (one sentence per line: the output column) or tsv (every column, for scripts).",
        rich_help_panel=OUTPUT)]),
    "accelerator": (None, AcceleratorOpt),
    "devices": (None, DevicesOpt),
}


def generation_command(fn: Callable[..., None]) -> Callable[..., None]:
    """Give the command ``fn(gen, target, ...)`` the decoding options and the shared ones, declared once.

    The wrapper's signature (what Typer reads) is ``fn``'s own parameters (``target`` and the
    command's options, less ``gen``), then :data:`SHARED_OPTIONS`, then :data:`DECODE_OPTIONS`.
    Before ``fn`` runs, the format, the device and the decoding options are checked (exit 2 with one
    line); ``gen`` loads the run when the command first asks for it.
    """
    sig = inspect.signature(fn, eval_str=True)
    own = [p for name, p in sig.parameters.items() if name != "gen"]
    kw = inspect.Parameter.KEYWORD_ONLY
    shared = [inspect.Parameter(name, kw, default=default, annotation=ann) for name, (default, ann) in SHARED_OPTIONS.items()]
    decoding = [inspect.Parameter(name, kw, default=default, annotation=Annotated[
                    type(default), typer.Option(_flag(name), help=text, rich_help_panel=GENERATION)])
                for name, (default, text) in DECODE_OPTIONS.items()]

    @functools.wraps(fn)
    def command(**kwargs: Any) -> None:
        options = {name: kwargs.pop(name) for name in DECODE_OPTIONS}
        seed, as_json, fmt, accelerator, devices = (kwargs.pop(name) for name in SHARED_OPTIONS)
        _check_format(fmt)
        dcfg = _decode_config(options)
        device = _one_device(accelerator, devices)
        fn(Generation(kwargs["target"], dcfg, seed, as_json, fmt, device), **kwargs)

    params = own + shared + decoding
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
@generation_command
def sample(
    gen: Generation,
    target: RunArg,
    n: Annotated[int, typer.Option("-n", "--num", help="Sentences to sample.")] = 10,
) -> None:
    """Decode sentences from z drawn from the prior."""
    if n < 1:
        _fail(f"-n must be >= 1, got {n}")
    gen.require_latent("to sample from")
    from seqvae.generation import sample_prior

    ids = sample_prior(gen.model, n, gen.dcfg, seed=gen.seed)  # sample i does not depend on -n
    rows = [{"i": i + 1, "sentence": gen.words(s)} for i, s in enumerate(ids)]
    gen.show(rows, [("#", "i"), ("sample", "sentence")], f"seqvae sample ({gen.dcfg.mode})", {"seed": gen.seed})


@app.command(epilog="Examples:\n\n  seqvae reconstruct runs/exp --input sentences.txt\n\n"
                    "  echo 'the cat sat on the mat' | seqvae reconstruct runs/exp --input - --json")
@generation_command
def reconstruct(
    gen: Generation,
    target: RunArg,
    input_: Annotated[str, typer.Option("--input", help="File with one sentence per line, or - for stdin.")] = "-",
    sample_z: Annotated[bool, typer.Option("--sample-z", help="Decode from a sample of q(z|x) instead of its mean.")] = False,
) -> None:
    """Encode each sentence, decode it again, and show both."""
    from seqvae.generation import reconstruct as rec

    enc = gen.encode(_read_lines(input_, gen.cfg), "stdin" if input_ == "-" else input_)
    ids = rec(gen.model, enc, gen.vocab, gen.dcfg, sample=sample_z, generator=gen.generator())
    rows = [{"input": s, "reconstruction": gen.words(r)} for s, r in zip(enc.sentences, ids)]
    gen.show(rows, [("input", "input"), ("reconstruction", "reconstruction")], "seqvae reconstruct",
             {"unknown_words": enc.unknown, "z": "sample" if sample_z else "mean"})


@app.command(epilog="Example:\n\n  seqvae interpolate runs/exp \"the market fell\" \"stocks rose sharply\" --steps 8")
@generation_command
def interpolate(
    gen: Generation,
    target: RunArg,
    first: Annotated[str, typer.Argument(help="Sentence at a = 0.")],
    second: Annotated[str, typer.Argument(help="Sentence at a = 1.")],
    steps: Annotated[int, typer.Option("--steps", help="Points on the path, both ends included.")] = 8,
) -> None:
    """Decode z(a) = (1 - a) z_1 + a z_2 between two sentences' posterior means (the homotopy)."""
    if steps < 2:
        _fail(f"--steps must be >= 2, got {steps}")
    gen.require_latent("to interpolate in")
    from seqvae.generation import interpolate as interp

    enc = gen.encode([first, second], "input")
    path = interp(gen.model, enc, gen.vocab, steps, gen.dcfg, gen.generator())
    rows = [{"a": f"{a:.3f}", "sentence": gen.words(s)} for a, s in path]
    gen.show(rows, [("a", "a"), ("sentence", "sentence")], "seqvae interpolate",
             {"inputs": [first, second], "unknown_words": enc.unknown})


@app.command(epilog="Example:\n\n  seqvae attribute runs/yelp --positive sentiment.dev.1 --negative sentiment.dev.0 "
                    "--apply \"the food was cold\" --scale 1.5")
@generation_command
def attribute(
    gen: Generation,
    target: RunArg,
    positive: Annotated[Path, typer.Option("--positive", help="Sentences with the attribute, one per line.")],
    negative: Annotated[Path, typer.Option("--negative", help="Sentences without it, one per line.")],
    apply: Annotated[list[str], typer.Option("--apply", help="Sentence to shift (repeatable).")],
    scale: Annotated[float, typer.Option("--scale", help="z + scale * (mean z+ - mean z-).")] = 1.0,
) -> None:
    """Compute an attribute vector (mean z of --positive minus mean z of --negative) and add it to sentences."""
    gen.require_latent("for an attribute vector")
    from seqvae.generation import apply_attribute, attribute_vector, reconstruct as rec

    pos = gen.encode(_read_lines(str(positive), gen.cfg), str(positive))
    neg = gen.encode(_read_lines(str(negative), gen.cfg), str(negative))
    enc = gen.encode(list(apply), "--apply")
    vector = attribute_vector(gen.model, pos, neg, gen.vocab)
    plain = rec(gen.model, enc, gen.vocab, gen.dcfg, generator=gen.generator())
    shifted = apply_attribute(gen.model, enc, gen.vocab, vector, scale, gen.dcfg, gen.generator())
    rows = [{"input": s, "reconstruction": gen.words(p), "shifted": gen.words(t)}
            for s, p, t in zip(enc.sentences, plain, shifted)]
    gen.show(rows, [("input", "input"), ("reconstruction", "reconstruction"), (f"+ {scale:g} x vector", "shifted")],
             "seqvae attribute", {"vector_norm": float(vector.norm()), "n_positive": len(pos.ids),
                                  "n_negative": len(neg.ids), "scale": scale, "unknown_words": enc.unknown})
