"""``python -m seqvae.cli`` runs the ``seqvae`` command (as ``python -m seqvae`` does)."""

from seqvae.cli import main

main()
