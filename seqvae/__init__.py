"""seqvae: a pluggable research toolkit of sequence VAEs.

Importing ``seqvae`` is cheap: it does not import torch. The main entry points are
:func:`seqvae.composer.build_model`, :class:`seqvae.model.SequenceVAE`,
:func:`seqvae.training.run_experiment` and :func:`seqvae.bench.runner.run_grid`.
"""

__version__ = "0.1.0"
