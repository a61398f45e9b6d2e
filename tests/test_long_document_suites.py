"""The yahoo and yelp suites end to end at their full model sizes (embedding 512, LSTM 1024/1024)
on small generated slices in their corpora's layout: their configs, long-document batching and
memory, without the corpora (which the project does not have and cannot ship).

The slices mimic He et al.'s files: Yahoo, one document per line, 20 to 200 words (their cap);
Yelp, ``LABEL<TAB>text`` with ratings 0-4. The words come from a fixed generator, so the tests
never depend on data outside the repository."""

from __future__ import annotations

import json
import random
import resource
import subprocess
import sys
from pathlib import Path

import pytest

N_DOCS = {"train": 200, "valid": 40, "test": 40}
VOCAB = [f"w{i}" for i in range(3000)]


def _document(rng: random.Random) -> list[str]:
    # long documents, some at the 200-word cap: the shapes that stress batching and memory
    n = 200 if rng.random() < 0.1 else rng.randint(20, 199)
    return [VOCAB[min(int(rng.paretovariate(1.1)), len(VOCAB)) - 1] for _ in range(n)]


def _slice(folder: Path, stem: str, labeled: bool) -> dict[str, list[int]]:
    """``stem.{train,valid,test}.txt`` in ``folder``; returns the words per document of each split."""
    folder.mkdir(parents=True)
    rng = random.Random(stem)
    lengths = {}
    for split, n in N_DOCS.items():
        docs = [_document(rng) for _ in range(n)]
        lines = [(f"{rng.randint(0, 4)}\t" if labeled else "") + " ".join(d) for d in docs]
        (folder / f"{stem}.{split}.txt").write_text("\n".join(lines) + "\n")
        lengths[split] = [len(d) for d in docs]
    return lengths


@pytest.mark.slow  # the full-size model on 200-word documents: about a minute per suite on 2 cores
@pytest.mark.parametrize(("suite", "labeled"), [("yahoo", False), ("yelp", True)])
def test_suite_trains_and_evaluates_long_documents_at_full_size(tmp_path, suite, labeled):
    lengths = _slice(tmp_path / "data", suite, labeled)
    cmd = [sys.executable, "-m", "seqvae", "bench", "--suite", suite, "--data-dir", str(tmp_path / "data"),
           "--max-steps", "4", "--iw-samples", "2", "--set", "train.val_every=2", "--out", str(tmp_path / "b"),
           "--json"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    (row,) = json.loads(res.stdout)
    cfg = json.loads((Path(row["run_dir"]) / "config.json").read_text())
    assert (cfg["model"]["embed_dim"], cfg["model"]["hidden_size"], cfg["model"]["latent_dim"]) == (512, 1024, 32)
    assert row["data"]["sentences"] == N_DOCS
    m = row["metrics"]
    # every word of every test document counted, plus one <eos> each: nothing truncated or dropped
    assert m["n_sentences"] == N_DOCS["test"] and m["n_tokens"] == sum(lengths["test"]) + N_DOCS["test"]
    assert max(lengths["test"]) == 200
    assert [v["step"] for v in row["validation"]["validations"]] == [2, 4]
    assert row["status"] == "ok" and m["rec"] > 0 and m["iw_nll"] > 0
    # memory: the largest child process so far (this run included) stayed within a few GiB
    peak_gib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    assert peak_gib < 4.0, f"peak resident memory {peak_gib:.1f} GiB"
