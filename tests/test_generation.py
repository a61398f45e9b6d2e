"""Decoding strategies, reconstruction, interpolation, attribute vectors and safe checkpoints."""

from __future__ import annotations

import itertools
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from seqvae.cli import app
from seqvae.composer import build_model
from seqvae.config import ConfigError, validate_experiment
from seqvae.data.corpus import TokenStore
from seqvae.data.vocab import SPECIALS, Vocab
from seqvae.generation import (
    DecodeConfig,
    apply_attribute,
    attribute_vector,
    decode,
    encode_sentences,
    interpolate,
    reconstruct,
    sample_prior,
)
from seqvae.training import load_checkpoint, save_checkpoint

runner = CliRunner()
VOCAB = Vocab([*SPECIALS, "the", "cat", "dog", "sat", "ran", "on", "mat", "a"])
TINY = {"model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 12}}
STRATEGIES = [
    DecodeConfig(mode="greedy"),
    DecodeConfig(mode="sample", temperature=1.3),
    DecodeConfig(mode="top-k", top_k=3),
    DecodeConfig(mode="top-p", top_p=0.7),
    DecodeConfig(mode="beam", beam_width=3),
]


def tiny(decoder="lstm", seed=0, **raw):
    torch.manual_seed(seed)
    return build_model(validate_experiment({**TINY, "decoder": decoder, **raw}), VOCAB).eval()


@pytest.mark.parametrize("cfg", STRATEGIES, ids=[c.mode for c in STRATEGIES])
@pytest.mark.parametrize("decoder", ["lstm", "gru", "dilated-cnn"])
def test_every_strategy_is_deterministic_under_a_seed(cfg, decoder):
    model = tiny(decoder)
    runs = [sample_prior(model, 6, cfg, torch.Generator().manual_seed(3)) for _ in range(2)]
    assert runs[0] == runs[1]
    assert all(VOCAB.pad_id not in s and VOCAB.bos_id not in s and VOCAB.eos_id not in s for s in runs[0])
    assert all(len(s) <= cfg.max_length for s in runs[0])
    with torch.no_grad():  # a decoder that always prefers <eos> stops at once, whatever the strategy
        model.decoder.out.bias[VOCAB.eos_id] = 100.0
    assert sample_prior(model, 3, cfg, torch.Generator().manual_seed(3)) == [[], [], []]


def test_sampling_strategies_differ_across_seeds_and_greedy_equivalents():
    model = tiny(seed=1)
    z = torch.randn(16, 3, generator=torch.Generator().manual_seed(0))
    greedy = decode(model, z, DecodeConfig(mode="greedy"))
    a = decode(model, z, DecodeConfig(mode="sample"), torch.Generator().manual_seed(1))
    b = decode(model, z, DecodeConfig(mode="sample"), torch.Generator().manual_seed(2))
    assert a != b  # sampling really samples
    assert decode(model, z, DecodeConfig(mode="top-k", top_k=1), torch.Generator().manual_seed(5)) == greedy
    assert decode(model, z, DecodeConfig(mode="top-p", top_p=1e-6), torch.Generator().manual_seed(5)) == greedy


@pytest.mark.parametrize("mode", ["sample", "top-k", "greedy"])
def test_sample_i_does_not_depend_on_how_many_are_drawn(mode):
    """``seqvae sample -n 3`` and ``-n 8`` at one seed share their first three sentences."""
    model = tiny(seed=1)
    cfg = DecodeConfig(mode=mode, top_k=5)
    three, eight = sample_prior(model, 3, cfg, seed=7), sample_prior(model, 8, cfg, seed=7)
    assert eight[:3] == three
    assert sample_prior(model, 8, cfg, seed=8) != eight  # the seed matters


@pytest.mark.parametrize("decoder", ["lstm", "gru", "dilated-cnn"])
def test_beam_width_one_equals_greedy(decoder):
    model = tiny(decoder, seed=2)
    z = torch.randn(12, 3, generator=torch.Generator().manual_seed(4))
    for max_length in (3, 50):
        greedy = decode(model, z, DecodeConfig(mode="greedy", max_length=max_length))
        beam = decode(model, z, DecodeConfig(mode="beam", beam_width=1, max_length=max_length))
        assert beam == greedy


def test_wide_beam_finds_the_most_likely_sentence_by_brute_force():
    """With a beam as wide as the search space, beam search returns the exact argmax of log p(x|z)."""
    small = Vocab([*SPECIALS, "x", "y", "w"])
    torch.manual_seed(7)
    model = build_model(validate_experiment(TINY), small).eval()
    z = torch.randn(2, 3, generator=torch.Generator().manual_seed(1))
    cands = [list(c) for n in range(3) for c in itertools.product([4, 5, 6], repeat=n)]  # 0..2 words, then <eos>
    with torch.no_grad():
        batch = TokenStore.from_lists(cands).batch(torch.arange(len(cands)), small)
        best = []
        for i in range(2):
            logp = -model.reconstruction_nll(batch, z[i].expand(len(cands), -1))
            best.append(cands[int(logp.argmax())])
    found = decode(model, z, DecodeConfig(mode="beam", beam_width=40, max_length=3, length_penalty=0.0))
    assert found == best


def test_interpolation_endpoints_are_the_reconstructions():
    model = tiny(seed=3)
    text = encode_sentences(["the cat sat on the mat", "a dog ran"], VOCAB)
    path = interpolate(model, text, VOCAB, steps=5)
    assert [a for a, _ in path] == [0.0, 0.25, 0.5, 0.75, 1.0]
    rec = reconstruct(model, text, VOCAB)
    assert path[0][1] == rec[0] and path[-1][1] == rec[1]
    with pytest.raises(ValueError, match="exactly 2 sentences"):
        interpolate(model, encode_sentences(["the cat"], VOCAB), VOCAB)


def test_unknown_words_are_counted_and_attribute_vectors_are_mean_differences():
    text = encode_sentences(["the zebra sat", "unknown words here"], VOCAB)
    assert text.unknown == 4 and text.ids[0] == [4, VOCAB.unk_id, 7]
    model = tiny(seed=4)
    pos, neg = encode_sentences(["the cat sat", "the cat ran"], VOCAB), encode_sentences(["a dog", "a dog sat"], VOCAB)
    v = attribute_vector(model, pos, neg, VOCAB, batch_size=1)
    with torch.no_grad():
        mp = model.encode(pos.batch(VOCAB)).mean.mean(0)
        mn = model.encode(neg.batch(VOCAB)).mean.mean(0)
    torch.testing.assert_close(v, mp - mn)
    assert apply_attribute(model, pos, VOCAB, v, scale=0.0) == reconstruct(model, pos, VOCAB)


# ------------------------------------------------------------------------------ checkpoints


def _checkpoint(tmp_path: Path) -> Path:
    model = tiny(seed=5)
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, model, validate_experiment({**TINY, "decoder": "lstm"}), VOCAB.to_list())
    return path


@pytest.mark.slow
def test_checkpoint_loads_in_a_fresh_process_from_the_file_alone(tmp_path):
    path = _checkpoint(tmp_path)
    model, _, vocab = load_checkpoint(path)
    z = torch.tensor([[0.5, -1.0, 2.0]])
    here = decode(model, z, DecodeConfig(mode="beam", beam_width=2))
    code = ("import json, torch; from seqvae.training import load_checkpoint; from seqvae.generation import "
            "decode, DecodeConfig; m, c, v = load_checkpoint(r'%s'); "
            "print(json.dumps(decode(m, torch.tensor([[0.5, -1.0, 2.0]]), DecodeConfig(mode='beam', beam_width=2))))"
            % path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout) == here and vocab == VOCAB


class _Payload:
    """Unpickling this would run ``touch`` on the marker file."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("writer", ["torch.save", "raw pickle"])
def test_a_checkpoint_with_a_code_payload_is_refused_and_never_runs(tmp_path, writer):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    payload = {"format": "seqvae-checkpoint/1", "config": {}, "vocab": [], "state_dict": _Payload(marker)}
    if writer == "torch.save":
        torch.save(payload, evil)
    else:
        evil.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(ValueError, match="not a readable seqvae checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()
    res = runner.invoke(app, ["sample", str(evil)])
    assert res.exit_code == 2 and "not a readable seqvae checkpoint" in res.output and not marker.exists()


def test_truncated_and_foreign_checkpoints_and_missing_plugins_are_clear_errors(tmp_path):
    path = _checkpoint(tmp_path)
    data = path.read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="cut.pt: not a readable seqvae checkpoint"):
        load_checkpoint(cut)
    payload = torch.load(path, weights_only=True)
    payload["config"]["decoder"] = {"kind": "transformer"}
    payload["components"]["decoder:transformer"] = "seqvae-transformer==0.1.0"
    foreign = tmp_path / "foreign.pt"
    torch.save(payload, foreign)
    with pytest.raises(ConfigError, match="decoder 'transformer' came from seqvae-transformer==0.1.0: install"):
        load_checkpoint(foreign)


# ------------------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_generation_commands(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    _checkpoint(run)
    args = ["--decode", "top-k", "--top-k", "3", "--seed", "9", "--json"]
    first = runner.invoke(app, ["sample", str(run), "-n", "4", *args])
    again = runner.invoke(app, ["sample", str(run), "-n", "4", *args])
    assert first.exit_code == 0, first.output
    assert json.loads(first.stdout)["rows"] == json.loads(again.stdout)["rows"] and len(json.loads(first.stdout)["rows"]) == 4
    res = runner.invoke(app, ["reconstruct", str(run), "--input", "-", "--json"], input="the cat sat\nthe zebra ran\n")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["unknown_words"] == 1 and [r["input"] for r in out["rows"]] == ["the cat sat", "the zebra ran"]
    res = runner.invoke(app, ["interpolate", str(run), "the cat sat", "a dog ran", "--steps", "3", "--json"])
    assert res.exit_code == 0, res.output
    path = json.loads(res.stdout)["rows"]
    assert [r["a"] for r in path] == ["0.000", "0.500", "1.000"]
    pos, neg = tmp_path / "pos.txt", tmp_path / "neg.txt"
    pos.write_text("the cat sat\nthe cat ran on the mat\n")
    neg.write_text("a dog\n\na dog sat\n")  # an empty line is skipped
    res = runner.invoke(app, ["attribute", str(run), "--positive", str(pos), "--negative", str(neg),
                              "--apply", "a dog ran", "--scale", "2", "--json"])
    assert res.exit_code == 0, res.output
    att = json.loads(res.stdout)
    assert att["n_positive"] == 2 and att["n_negative"] == 2 and att["vector_norm"] > 0
    assert set(att["rows"][0]) == {"input", "reconstruction", "shifted"}


@pytest.mark.parametrize(("args", "message"), [
    (["sample", "{run}", "--decode", "nucleus"], "--decode: Input should be"),
    (["sample", "{run}", "--top-p", "1.5"], "--top-p: Input should be less than or equal to 1"),
    (["sample", "{run}", "-n", "0"], "-n must be >= 1"),
    (["sample", "{missing}"], "checkpoint not found"),
    (["interpolate", "{run}", "the cat", "a dog", "--steps", "1"], "--steps must be >= 2"),
    (["reconstruct", "{run}", "--input", "{missing}"], "file not found"),
    (["attribute", "{run}", "--positive", "{empty}", "--negative", "{empty}", "--apply", "the cat"], "file is empty"),
])
def test_cli_generation_errors_exit_2(tmp_path, args, message):
    run = tmp_path / "run"
    run.mkdir()
    _checkpoint(run)
    (tmp_path / "empty.txt").write_text("")
    fill = {"run": str(run), "missing": str(tmp_path / "nope.pt"), "empty": str(tmp_path / "empty.txt")}
    res = runner.invoke(app, [a.format(**fill) for a in args])
    assert res.exit_code == 2, res.output
    assert message in res.output


# ------------------------------------------------------------------------------ plots


def test_runs_write_training_and_latent_plots(tmp_path):
    from seqvae.plots import read_curves
    from seqvae.training import run_experiment

    cfg = validate_experiment({
        "data": {"dataset": {"kind": "synthetic", "n_sentences": 300, "n_train": 200, "n_valid": 50,
                             "vocab_size": 30, "length": 5}, "batch_size": 16},
        "model": {"latent_dim": 2, "embed_dim": 8, "hidden_size": 8}, "schedule": "linear",
        "train": {"max_steps": 20, "log_every": 5}, "eval": {"iw_samples": 0},
    })
    result = run_experiment(cfg, tmp_path / "run")
    assert result["plots"] == ["training.png", "latent.png"]
    for name in result["plots"]:
        data = (tmp_path / "run" / name).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    beta = read_curves(tmp_path / "run" / "logs" / "metrics.csv")["train/beta"]
    assert [s for s, _ in beta] == list(range(1, 20, 2)) and beta[0][1] < beta[-1][1]  # every 20 // 10 steps
