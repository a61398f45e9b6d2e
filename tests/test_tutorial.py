"""benchmarks/quality/tutorial.py on a tiny PTB-layout corpus: every step's command runs, and the page
shows each command with the output it printed."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.scripts import load_script


def _tutorial_script():
    return load_script("benchmarks/quality/tutorial.py")


def _tiny_corpus(folder: Path) -> Path:
    folder.mkdir()
    words = "the a company stock market said it expects to report loss do n't think good idea".split()
    for split, n in (("train", 120), ("valid", 40), ("test", 30)):
        lines = [" ".join(words[(i * 5 + j * 3) % len(words)] for j in range(3 + i % 5)) for i in range(n)]
        (folder / f"ptb.{split}.txt").write_text("\n".join(f" {line} " for line in lines) + "\n")
    return folder


@pytest.mark.slow  # ten seqvae processes
def test_the_walk_through_shows_every_step_with_the_output_of_its_command(tmp_path):
    data = _tiny_corpus(tmp_path / "ptb")
    page = tmp_path / "page.md"
    fast = ["--set", "data.dataset.verify_checksums=false", "--set", "model.embed_dim=16", "--set",
            "model.hidden_size=16", "--set", "model.latent_dim=4"]
    argv = ["--data-dir", str(data), "--max-steps", "4", "--iw-samples", "2", "--out", str(tmp_path / "runs"),
            "--page", str(page), "--assets", str(tmp_path / "assets"), *fast]
    tutorial = _tutorial_script()
    assert tutorial.main(argv) == 0
    text = page.read_text()
    steps = re.findall(r"^### Step (\d): ", text, flags=re.M)
    assert steps == [str(i) for i in range(1, 8)]
    commands = re.findall(r"^\$ seqvae (\w+) ", text, flags=re.M)
    assert commands == ["bench"] * 3 + ["sample", "reconstruct", "interpolate", "attribute"]
    assert str(data) not in text and str(tmp_path) not in text  # paths as a reader types them
    assert "--data-dir data/ptb" in text and "runs/tutorial/wd-0.5/" in text
    # each block is the command's real output: the bench tables name their schedule, the generation
    # tables their command, and reconstruct echoes its input sentences
    blocks = re.findall(r"```console\n\$ (.*?)\n(.*?)```", text, flags=re.S)
    assert len(blocks) == 7 and all(out.strip() for _, out in blocks)
    assert "constant" in blocks[0][1] and "sigmoid" in blocks[1][1] and "word-dropout" in blocks[2][1]
    assert all(" ".join(t.split()[:3]) in blocks[4][1] for t in tutorial.RECONSTRUCT)  # cells wrap at 88 columns
    assert (tmp_path / "assets" / "word-dropout.png").stat().st_size > 0
    # a second run reuses the finished trainings and their recorded output
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").glob("*/*/checkpoint.pt")}
    assert len(before) == 4  # constant, sigmoid, k = 0.5 and 1
    assert tutorial.main(argv) == 0
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert re.findall(r"```console\n\$ (.*?)\n(.*?)```", page.read_text(), flags=re.S)[:3] == blocks[:3]
