"""Text corpora: reading rules, errors with file and line, the text/labeled-text/ptb datasets."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from seqvae.components.datasets.ptb import PTB_FILES, PTBDataset
from seqvae.components.datasets.text import LabeledTextDataset, TextDataset
from seqvae.config import ConfigError, validate_experiment
from seqvae.data.corpora import CorpusError, download_file, read_sentences, sha256_of

PTB_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "ptb"
needs_ptb = pytest.mark.skipif(not (PTB_DIR / "ptb.test.txt").exists(), reason="shared PTB data not present")


def write(path: Path, data: str | bytes) -> Path:
    path.write_bytes(data.encode() if isinstance(data, str) else data)
    return path


# ------------------------------------------------------------------------------- read_sentences


@pytest.mark.parametrize(
    ("content", "kwargs", "expected"),
    [
        (None, {}, r"f\.txt: file not found"),
        ("", {}, r"f\.txt: file is empty"),
        ("\n \n", {}, r"f\.txt: file is empty"),
        (b"good line\nbad \xff byte\n", {}, r"f\.txt:2: not valid UTF-8 \(byte 0xff at column 5\)"),
        ("one\n\nthree\n", {}, r"f\.txt:2: empty line"),
        ("a b\na b c d\n", {"max_length": 3}, r"f\.txt:2: sentence of 4 words is longer than max_length=3"),
        ("1\tok\nno tab here\n", {"label_per_line": True}, r"f\.txt:2: expected 'LABEL<TAB>sentence'"),
        ("x\tok\n", {"label_per_line": True}, r"f\.txt:1: label 'x' is not a non-negative integer"),
        ("neg\tok\nmeh\tso so\n", {"label_per_line": True, "label_names": ["neg", "pos"]},
         r"f\.txt:2: label 'meh' is not one of \['neg', 'pos'\]"),
        ("a b c\n", {"max_length": 2, "length_policy": "drop"}, r"f\.txt: no sentences left"),
    ],
)
def test_bad_input_names_the_file_and_line(tmp_path, content, kwargs, expected):
    path = tmp_path / "f.txt"
    if content is not None:
        write(path, content)
    with pytest.raises(CorpusError, match=expected):
        read_sentences(path, **kwargs)


def test_length_policies_and_empty_lines_are_counted(tmp_path):
    path = write(tmp_path / "f.txt", "a b\n\na b c d e\r\nc\n  \nd e f\n")
    dropped = read_sentences(path, max_length=3, length_policy="drop", empty_lines="skip")
    assert dropped.sentences == [["a", "b"], ["c"], ["d", "e", "f"]]
    s = dropped.stats[0]
    assert (s.lines, s.sentences, s.words, s.empty_skipped, s.dropped_too_long, s.truncated) == (6, 3, 6, 2, 1, 0)
    cut = read_sentences(path, max_length=3, length_policy="truncate", empty_lines="skip")
    assert cut.sentences[1] == ["a", "b", "c"] and cut.stats[0].truncated == 1
    assert cut.labels is None


def test_labels_per_file_and_per_line(tmp_path):
    per_file = read_sentences(write(tmp_path / "pos", "great food\nnice\n"), label=1)
    assert per_file.labels == [1, 1]
    per_line = read_sentences(write(tmp_path / "mixed", "0\tbad food\n1\tgreat  food !\n"), label_per_line=True)
    assert per_line.labels == [0, 1] and per_line.sentences[1] == ["great", "food", "!"]


def test_simple_tokenizer_and_lowercase(tmp_path):
    text = read_sentences(write(tmp_path / "f", "Hello, World! It's fine.\n"), tokenizer="simple", lowercase=True)
    assert text.sentences == [["hello", ",", "world", "!", "it's", "fine", "."]]


# ---------------------------------------------------------------------------------- datasets


def test_text_dataset_builds_vocab_from_train_only(tmp_path):
    write(tmp_path / "train.txt", "the cat sat\nthe dog sat\nthe cat ran\n")
    write(tmp_path / "test.txt", "the bird sat\n")
    cfg = TextDataset.Config(kind="text", data_dir=str(tmp_path), train="train.txt", test="test.txt", min_freq=2)
    corpus = TextDataset(cfg).load(tmp_path)
    assert corpus.vocab.itos[4:] == ["the", "cat", "sat"]  # dog/ran seen once: below min_freq
    assert corpus.info["unk_tokens"] == {"train": 2, "test": 1}
    assert corpus.info["tokens"] == {"train": 12, "test": 4}
    test = corpus.split("test")
    assert test.sentence(0) == [4, 3, 6]  # bird -> <unk>
    with pytest.raises(ValueError, match="no split 'valid'"):
        corpus.split("valid")


def test_labeled_text_reads_yelp_style_files(tmp_path):
    write(tmp_path / "s.0", "bad food\nslow\n")
    write(tmp_path / "s.1", "great food\n")
    cfg = LabeledTextDataset.Config(
        kind="labeled-text", data_dir=str(tmp_path),
        train=[{"path": "s.0", "label": 0}, {"path": "s.1", "label": 1}],
    )
    corpus = LabeledTextDataset(cfg).load(tmp_path)
    assert corpus.split("train").labels.tolist() == [0, 0, 1]
    assert [s["path"].endswith(n) for s, n in zip(corpus.info["read"]["train"], ["s.0", "s.1"])] == [True, True]


def test_dataset_config_errors_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="data.dataset.length_policy"):
        validate_experiment({"data": {"dataset": {"kind": "text", "train": "x", "length_policy": "cut"}}})
    with pytest.raises(ConfigError, match="data.dataset.train"):
        validate_experiment({"data": {"dataset": {"kind": "text"}}})


@needs_ptb
def test_ptb_matches_the_published_counts(tmp_path):
    corpus = PTBDataset(PTBDataset.Config(kind="ptb", data_dir=str(PTB_DIR))).load(tmp_path)
    assert corpus.info["sentences"] == {"train": 42_068, "valid": 3_370, "test": 3_761}
    assert corpus.info["tokens"] == {"train": 929_589, "valid": 73_760, "test": 82_430}
    assert len(corpus.vocab) == 4 + 9_998  # the 10k PTB types minus <unk> (a special) and <eos> (not in the text)
    assert corpus.info["unk_tokens"]["test"] == sum(line.split().count("<unk>") for line in
                                                    (PTB_DIR / "ptb.test.txt").read_text().splitlines())


@needs_ptb
def test_ptb_refuses_a_modified_copy_and_names_missing_files(tmp_path):
    copy = tmp_path / "ptb"
    shutil.copytree(PTB_DIR, copy)
    (copy / "ptb.valid.txt").chmod(0o644)
    with open(copy / "ptb.valid.txt", "a") as fh:
        fh.write(" one more line \n")
    ds = PTBDataset(PTBDataset.Config(kind="ptb", data_dir=str(copy)))
    with pytest.raises(CorpusError, match=r"ptb\.valid\.txt: sha256 .* differs from the canonical"):
        ds.load(tmp_path)
    lax = PTBDataset(PTBDataset.Config(kind="ptb", data_dir=str(copy), verify_checksums=False)).load(tmp_path)
    assert len(lax.split("valid")) == 3_371
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(CorpusError, match=r"empty/ptb\.train\.txt: file not found"):
        PTBDataset(PTBDataset.Config(kind="ptb", data_dir=str(empty))).load(tmp_path)


@needs_ptb
def test_ptb_download_checks_checksums_and_leaves_nothing_on_mismatch(tmp_path):
    """The download path, served from a local file:// URL (no network in tests)."""
    server = tmp_path / "server"
    shutil.copytree(PTB_DIR, server)
    cache = tmp_path / "cache"
    cfg = PTBDataset.Config(kind="ptb", download=True, url=server.as_uri() + "/")
    corpus = PTBDataset(cfg).load(cache)
    assert len(corpus.split("test")) == 3_761
    for name, sha in PTB_FILES.values():
        assert sha256_of(cache / "ptb" / name) == sha
    bad = server / "bad.txt"
    write(bad, "not ptb\n")
    with pytest.raises(CorpusError, match="checksum mismatch"):
        download_file(bad.as_uri(), tmp_path / "out" / "ptb.test.txt", PTB_FILES["test"][1])
    assert list((tmp_path / "out").iterdir()) == []
    with pytest.raises(CorpusError, match="download failed"):
        download_file((server / "missing.txt").as_uri(), tmp_path / "out" / "x.txt", "0" * 64)


SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.skipif(not (SHARED / "yelp_short_shen2017" / "sentiment.dev.0").exists(), reason="shared Yelp data absent")
def test_labeled_text_on_the_real_yelp_sentiment_files(tmp_path):
    folder = SHARED / "yelp_short_shen2017"
    cfg = LabeledTextDataset.Config(
        kind="labeled-text", data_dir=str(folder),
        train=[{"path": "sentiment.dev.0", "label": 0}, {"path": "sentiment.dev.1", "label": 1}],
    )
    labels = LabeledTextDataset(cfg).load(tmp_path).split("train").labels
    assert (int((labels == 0).sum()), int((labels == 1).sum())) == (25_278, 38_205)  # the README's line counts


@pytest.mark.skipif(not (SHARED / "short_yelp_vae" / "short_yelp.test.txt").exists(), reason="shared data absent")
def test_labeled_text_reads_labels_per_line_on_short_yelp(tmp_path):
    folder = SHARED / "short_yelp_vae"
    cfg = LabeledTextDataset.Config(kind="labeled-text", data_dir=str(folder), train="short_yelp.test.txt")
    labels = LabeledTextDataset(cfg).load(tmp_path).split("train").labels
    assert (int((labels == 0).sum()), int((labels == 1).sum())) == (3_954, 6_046)  # the README's label counts
