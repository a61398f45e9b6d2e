"""Every kind of bad input: one clear line naming the file/field/line, exit code 2, nothing half-written.

Each case builds its input in a fresh folder, runs one ``seqvae`` command in-process and checks:
the exit code is 2; the message is one line that contains the expected words; no traceback; and
the output folder the command was pointed at holds nothing new (or, for a folder that held a run,
exactly what it held before).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Callable

import pytest
import torch
from typer.testing import CliRunner

from seqvae.cli import app

runner = CliRunner()
TINY = {"model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 8},
        "data": {"dataset": {"kind": "synthetic", "n_sentences": 90, "n_train": 60, "n_valid": 15, "vocab_size": 20,
                             "length": 4, "embed_dim": 8, "hidden_size": 8}, "batch_size": 16},
        "train": {"max_steps": 3}, "eval": {"iw_samples": 2}}


def _write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def _config(tmp: Path, raw: dict | str, name: str = "exp.yaml") -> Path:
    return _write(tmp / name, raw if isinstance(raw, str) else json.dumps(raw))


def _train(tmp: Path, raw: dict | str, name: str = "exp.yaml") -> list[str]:
    return ["train", "--config", str(_config(tmp, raw, name)), "--out", str(tmp / "out")]


def _merge(**parts: dict) -> dict:
    out = json.loads(json.dumps(TINY))
    for key, value in parts.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def _corpus_files(folder: Path, text: str) -> Path:
    for split in ("train", "valid", "test"):
        _write(folder / f"{split}.txt", text)
    return folder


def _text_corpus(tmp: Path, train: str | bytes | None, **cfg) -> list[str]:
    """A ``text`` data set of three files; ``train`` replaces the train file's content (None: no file)."""
    good = "the cat sat\na dog ran\n"
    if train is not None:
        _write(tmp / "data" / "train.txt", train)
    _write(tmp / "data" / "valid.txt", good)
    _write(tmp / "data" / "test.txt", good)
    ds = {"kind": "text", "data_dir": str(tmp / "data"), "train": "train.txt", "valid": "valid.txt",
          "test": "test.txt", **cfg}
    return _train(tmp, _merge(data={"dataset": ds, "batch_size": 16}))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory) -> Path:
    """One finished tiny run (its folder), shared by the checkpoint cases."""
    folder = tmp_path_factory.mktemp("trained")
    _corpus_files(folder / "data", "the cat sat on the mat\na dog ran\nthe dog sat\n" * 10)
    raw = _merge(data={"dataset": {"kind": "text", "data_dir": str(folder / "data"), "train": "train.txt",
                                   "valid": "valid.txt", "test": "test.txt"}, "batch_size": 8})
    res = runner.invoke(app, ["train", "--config", str(_config(folder, raw)), "--out", str(folder / "run")])
    assert res.exit_code == 0, res.output
    return folder / "run"


def _checkpoint_variant(tmp: Path, run: Path, change: Callable[[dict], None]) -> list[str]:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    change(payload)
    torch.save(payload, tmp / "variant.pt")
    return ["eval", str(tmp / "variant.pt")]


class _Marker:
    """Unpickling this creates a file: proof that loading executed code."""

    def __init__(self, path: str):
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


# (id, builder(tmp, trained_run) -> argv, words the one-line message must contain)
CASES: list[tuple[str, Callable[[Path, Path], list[str]], list[str]]] = [
    # --- config files
    ("yaml-malformed", lambda t, r: _train(t, "decoder: lstm\nmodel: {latent_dim: 3\n"), ["exp.yaml:", "malformed YAML"]),
    ("json-malformed", lambda t, r: _train(t, '{"decoder": "lstm",\n "model": }', "exp.json"),
     ["exp.json:2", "malformed JSON"]),
    ("config-not-a-mapping", lambda t, r: _train(t, "- lstm\n- gru\n"), ["exp.yaml", "expected a mapping"]),
    ("config-missing", lambda t, r: ["train", "--config", str(t / "nope.yaml"), "--out", str(t / "out")],
     ["nope.yaml", "not found"]),
    ("config-binary", lambda t, r: ["train", "--config", str(_write(t / "exp.yaml", b"\xff\xfe\x00bin")), "--out",
                                    str(t / "out")], ["exp.yaml", "cannot read config"]),
    ("unknown-top-field", lambda t, r: _train(t, _merge(decodr="lstm")), ["exp.yaml", "decodr"]),
    ("unknown-nested-field", lambda t, r: _train(t, _merge(model={"hiden_size": 8})), ["exp.yaml", "model.hiden_size"]),
    ("wrong-type", lambda t, r: _train(t, _merge(model={"hidden_size": "big"})), ["model.hidden_size", "big"]),
    ("negative-size", lambda t, r: _train(t, _merge(model={"hidden_size": -4})), ["model.hidden_size", "-4"]),
    ("latent-size-zero", lambda t, r: _train(t, _merge(model={"latent_dim": 0})), ["model.latent_dim", "0"]),
    ("rate-above-one", lambda t, r: _train(t, _merge(regularizers=[{"kind": "word-dropout", "rate": 1.5}])),
     ["regularizers.0", "rate", "1.5"]),
    ("schedule-x0-negative", lambda t, r: _train(t, _merge(schedule={"kind": "sigmoid", "x0": -5})),
     ["schedule", "x0", "-5"]),
    ("zero-steps", lambda t, r: _train(t, _merge(train={"max_steps": 0})), ["train.max_steps"]),
    ("negative-lr", lambda t, r: _train(t, _merge(train={"lr": -1e-3})), ["train.lr"]),
    ("negative-iw-samples", lambda t, r: _train(t, _merge(eval={"iw_samples": -1})), ["eval.iw_samples"]),
    ("unknown-decoder", lambda t, r: _train(t, _merge(decoder="lstmm")), ["lstmm", "Did you mean 'lstm'"]),
    ("bidirectional-decoder", lambda t, r: _train(t, _merge(decoder={"kind": "lstm", "bidirectional": True})),
     ["decoder.bidirectional"]),
    ("import-path-as-kind", lambda t, r: _train(t, _merge(decoder="os:system")), ["decoder", "os:system"]),
    ("half-language-model", lambda t, r: _train(t, _merge(encoder="none")), ["encoder", "none"]),
    ("historyless-without-latent", lambda t, r: _train(t, _merge(encoder="none", prior="none",
                                                                  regularizers=["historyless"])),
     ["historyless", "would see nothing"]),
    ("vmf-on-one-dim", lambda t, r: _train(t, _merge(prior="vmf", model={"latent_dim": 1})), ["vmf", "latent_dim >= 2"]),
    ("set-without-equals", lambda t, r: ["bench", "--set", "model.latent_dim", "--out", str(t / "out")],
     ["--set", "KEY=VALUE"]),
    ("set-bad-index", lambda t, r: ["bench", "--regularizer", "word-dropout", "--set", "regularizers.3.rate=0.5",
                                    "--out", str(t / "out")],
     ["regularizers.3.rate", "not an index"]),
    ("bench-unknown-schedule", lambda t, r: ["bench", "--schedule", "sigmod", "--out", str(t / "out")],
     ["sigmod", "sigmoid"]),
    # --- corpora
    ("corpus-file-missing", lambda t, r: _text_corpus(t, None), ["train.txt", "not found"]),
    ("corpus-file-empty", lambda t, r: _text_corpus(t, ""), ["train.txt", "empty"]),
    ("corpus-binary", lambda t, r: _text_corpus(t, b"the cat\n\x00\xff\xfe\x89PNG\n"), ["train.txt:2", "UTF-8"]),
    ("corpus-empty-line", lambda t, r: _text_corpus(t, "the cat\n\na dog\n"), ["train.txt:2", "empty line"]),
    ("corpus-line-too-long", lambda t, r: _text_corpus(t, "the cat\n" + "w " * 30 + "\n", max_length=10,
                                                                  length_policy="error"),
     ["train.txt:2", "10"]),
    # --- checkpoints and evaluation
    ("checkpoint-missing", lambda t, r: ["eval", str(t / "missing.pt")], ["missing.pt", "not found"]),
    ("checkpoint-truncated", lambda t, r: ["eval", str(_write(t / "cut.pt", (r / "checkpoint.pt").read_bytes()[:3000]))],
     ["cut.pt", "not a readable seqvae checkpoint"]),
    ("checkpoint-python-objects", lambda t, r: ["eval", str(_torch_save(t / "obj.pt", {
        "format": "seqvae-checkpoint/1", "x": _Marker(str(t / "PWNED"))}))], ["obj.pt", "weights_only"]),
    ("checkpoint-not-ours", lambda t, r: ["eval", str(_write(t / "x.pt", b"hello"))], ["x.pt", "not a readable"]),
    ("checkpoint-plugin-missing", lambda t, r: _checkpoint_variant(t, r, lambda p: (
        p["config"].__setitem__("decoder", {"kind": "ghost"}),
        p["components"].__setitem__("decoder:ghost", "seqvae-ghost==1.0"))),
     ["ghost", "seqvae-ghost==1.0", "install"]),
    ("checkpoint-wrong-weights", lambda t, r: _checkpoint_variant(
        t, r, lambda p: p["config"]["model"].__setitem__("hidden_size", 9)), ["variant.pt", "do not fit"]),
    ("checkpoint-pickled-code", lambda t, r: ["eval", str(_write(t / "evil.pt", pickle.dumps(
        {"format": "seqvae-checkpoint/1", "x": _Marker(str(t / "PWNED"))}, protocol=2)))], ["evil.pt", "not a readable"]),
    ("vocabulary-mismatch", lambda t, r: ["eval", str(r), "--data-dir", str(_corpus_files(t / "d", "other words\n"))],
     ["vocabulary", "differs"]),
    ("eval-bad-split", lambda t, r: ["eval", str(r), "--split", "dev"], ["--split", "dev"]),
    ("eval-negative-k", lambda t, r: ["eval", str(r), "--iw-samples", "-3"], ["--iw-samples", "-3"]),
    ("eval-bad-precision", lambda t, r: ["eval", str(r), "--precision", "fp8"], ["--precision", "fp8"]),
    ("eval-bad-accelerator", lambda t, r: ["eval", str(r), "--accelerator", "tpu"], ["--accelerator", "tpu"]),
    ("eval-bad-format", lambda t, r: ["eval", str(r), "--format", "csv"], ["--format", "csv"]),
    ("sample-bad-format", lambda t, r: ["sample", str(r), "--format", "xml"], ["--format", "xml"]),
    ("eval-two-devices", lambda t, r: ["eval", str(r), "--devices", "2"], ["--devices", "one device"]),
    ("sample-gpu-without-cuda", lambda t, r: (_no_cuda(), ["sample", str(r), "--accelerator", "gpu"])[1],
     ["--accelerator gpu", "no CUDA device"]),
    # --- output folders
    ("train-into-another-run", lambda t, r: _occupied(t, "train"), ["already holds", "--overwrite"]),
    ("bench-into-another-bench", lambda t, r: _occupied(t, "bench"), ["already holds", "--resume"]),
    ("resume-not-a-run", lambda t, r: ["train", "--resume", str(_write(t / "out" / "x.txt", "x").parent)],
     ["no config.json"]),
    ("bench-resume-no-grid", lambda t, r: ["bench", "--resume", str(_write(t / "out" / "x.txt", "x").parent)],
     ["grid.json", "not found"]),
    ("bench-resume-with-axes", lambda t, r: ["bench", "--resume", str(t / "out"), "--decoder", "gru"],
     ["--resume", "--decoder"]),
    ("train-gpu-without-cuda", lambda t, r: (_no_cuda(), [*_train(t, TINY), "--accelerator", "gpu"])[1],
     ["train.accelerator gpu", "no CUDA device"]),
    ("train-out-is-a-file", lambda t, r: ["train", "--config", str(_config(t, TINY)), "--out",
                                          str(_write(t / "out", "not a folder"))], ["--out", "is a file"]),
    ("resume-missing-folder", lambda t, r: ["train", "--resume", str(t / "nope")], ["nope", "no such folder"]),
    ("val-every-without-valid-split", lambda t, r: _no_valid_split(t), ["train.val_every", "valid split"]),
    ("rerun-not-a-run", lambda t, r: ["bench", "--rerun", str(_write(t / "out" / "x.txt", "x").parent)],
     ["not a finished seqvae run"]),
]


def _torch_save(path: Path, obj: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(obj, path)
    return path


def _no_valid_split(tmp: Path) -> list[str]:
    """A text corpus with train and test files only, and a config that validates every 2 steps."""
    for split in ("train", "test"):
        _write(tmp / "data" / f"{split}.txt", "the cat sat\na dog ran\n")
    ds = {"kind": "text", "data_dir": str(tmp / "data"), "train": "train.txt", "test": "test.txt"}
    return _train(tmp, _merge(data={"dataset": ds, "batch_size": 16}, train={"max_steps": 3, "val_every": 2}))


def _no_cuda() -> None:
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present: --accelerator gpu is valid here")


def _occupied(tmp: Path, command: str) -> list[str]:
    """A folder that already holds another run (train) or bench (bench)."""
    out = tmp / "out"
    if command == "train":
        _write(out / "config.json", json.dumps({"decoder": "gru"}))
        _write(out / "result.json", "{}")
        return ["train", "--config", str(_config(tmp, TINY)), "--out", str(out)]
    _write(out / "results.jsonl", "{}\n")
    _write(out / "grid.json", "{}")
    return ["bench", "--max-steps", "3", "--out", str(out)]


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize(("argv_of", "words"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_one_clear_line_with_exit_2(tmp_path, trained_run, argv_of, words):
    argv = argv_of(tmp_path, trained_run)
    out = tmp_path / "out"
    before = _snapshot(out) if out.exists() else None
    run_before = _snapshot(trained_run)
    res = runner.invoke(app, argv)
    message = res.output.strip()
    assert res.exit_code == 2, f"exit {res.exit_code}: {res.output[-2000:]}"
    assert "Traceback" not in res.output and res.exception is None or isinstance(res.exception, SystemExit)
    assert message.startswith("error:") and "\n" not in message, message
    assert "weights_only=False" not in message and "two options" not in message  # no unsafe hint from torch
    assert "(got {" not in message  # a check of the whole config does not echo the whole config
    for w in words:
        assert w in message, f"{w!r} not in {message!r}"
    # nothing half-written: the output folder is as it was (absent, or exactly its old content)
    assert (_snapshot(out) if out.exists() else None) == before
    assert _snapshot(trained_run) == run_before  # the run that eval reads is never touched by a failure
    assert not (tmp_path / "PWNED").exists()  # no code ran while loading


@pytest.mark.slow
def test_a_100k_word_line_is_truncated_by_default_and_reported(tmp_path, caplog):
    """The newcomer's hang: a train file of normal lines plus one of 100,000 words. With the text
    dataset's defaults (max_length 1000, truncate) it trains in seconds, and the truncation is
    counted in result.json and reported in one log line naming the file."""
    import logging
    import time

    normal = "".join(f"the cat sat on mat {i % 5}\n" for i in range(100))
    huge = " ".join(f"w{i % 50}" for i in range(100_000)) + "\n"
    from seqvae.components.datasets.text import TextDataset

    args = _text_corpus(tmp_path, normal + huge)  # writes the files
    cfg = TextDataset.Config(kind="text", data_dir=str(tmp_path / "data"), train="train.txt")
    with caplog.at_level(logging.INFO, logger="seqvae"):
        text = TextDataset(cfg).read_split(cfg.train)
    assert max(len(s) for s in text.sentences) == cfg.max_length == 1000
    assert any("train.txt" in r.getMessage() and "1 truncated" in r.getMessage() for r in caplog.records)
    start = time.monotonic()  # (the CLI below replaces the log handlers, so the log check comes first)
    res = runner.invoke(app, [*args, "--json"])
    assert res.exit_code == 0, res.output
    read = json.loads(res.stdout)["data"]["read"]["train"][0]
    assert read["truncated"] == 1 and read["sentences"] == 101
    assert time.monotonic() - start < 120  # bounded (it hung for 22 minutes before the default limit)


def test_output_formats_fit_80_columns_and_serve_scripts(trained_run):
    """eval: the table at 80 columns falls back to plain lines (no number cut to '54…'); tsv has a
    header and every metric; sample --format plain is one sentence per line."""
    def run(*args: str, width: int = 80) -> str:
        res = runner.invoke(app, [*args], env={"COLUMNS": str(width)})
        assert res.exit_code == 0, res.output
        return res.stdout

    from rich.console import Console

    import seqvae.cli.run as commands

    saved = commands.out
    try:
        commands.out = Console(width=80)  # an 80-column terminal
        narrow = run("eval", str(trained_run), "--iw-samples", "2")
    finally:
        commands.out = saved
    assert "…" not in narrow and max(len(line) for line in narrow.splitlines()) <= 80
    assert "-ELBO" in narrow and "IW-NLL" in narrow and "collapsed" in narrow
    tsv = run("eval", str(trained_run), "--iw-samples", "2", "--format", "tsv").splitlines()
    head, row = tsv[0].split("\t"), tsv[1].split("\t")
    assert len(tsv) == 2 and len(head) == len(row) and "iw_nll" in head and "neg_elbo" in head
    float(row[head.index("neg_elbo")])  # a number, not a cut cell
    lines = run("sample", str(trained_run), "-n", "4", "--format", "plain").splitlines()
    assert len(lines) == 4 and all("│" not in line for line in lines)


@pytest.mark.slow
def test_sigterm_ends_a_run_with_a_100k_word_line_within_seconds(tmp_path):
    """The same corpus in a long run: SIGTERM ends it within seconds with the resume hint (exit 143)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    normal = "".join(f"the cat sat on mat {i % 5}\n" for i in range(100))
    huge = " ".join(f"w{i % 50}" for i in range(100_000)) + "\n"
    args = _text_corpus(tmp_path, normal + huge)
    argv = [sys.executable, "-m", "seqvae", *args, "--set", "train.max_steps=100000", "--set", "train.checkpoint_every=5"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    out = tmp_path / "out"
    deadline = time.monotonic() + 120
    while not (out / "resume.ckpt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=60)
    assert time.monotonic() - sent < 20 and proc.returncode == 143, stderr[-2000:]
    assert "stopped by SIGTERM" in stderr and f"--resume {out}" in stderr


@pytest.mark.parametrize(("columns", "width"), [(None, 200), ("88", 88), ("wide", 200), ("0", 200)])
def test_piped_output_is_200_columns_or_what_columns_says(monkeypatch, columns, width):
    from seqvae.cli._common import _piped_width

    monkeypatch.setattr("sys.stdout.isatty", lambda: False)
    if columns is None:
        monkeypatch.delenv("COLUMNS", raising=False)
    else:
        monkeypatch.setenv("COLUMNS", columns)
    assert _piped_width() == width
