"""``python -m seqvae`` runs the ``seqvae`` command."""

from seqvae.cli import main

main()
