"""The ``seqvae`` command. Thin: it parses, calls the library and prints.

One module per command group: ``seqvae.cli.bench`` (``bench``), ``seqvae.cli.run``
(``train``, ``eval``), ``seqvae.cli.generate`` (``sample``, ``reconstruct``, ``interpolate``,
``attribute``) and ``seqvae.cli.info`` (``plugins``, ``config``); ``seqvae.cli._common``
holds the app and what they share. Importing it (``seqvae --help``, ``seqvae plugins list``) does
not import torch.
"""

from __future__ import annotations

# importing a command module registers its commands on ``app``, in this order in ``seqvae --help``
from seqvae.cli import bench  # noqa: F401, I001
from seqvae.cli import run  # noqa: F401
from seqvae.cli import generate  # noqa: F401
from seqvae.cli import info  # noqa: F401
from seqvae.cli._common import app

__all__ = ["app", "main"]


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
