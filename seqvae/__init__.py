"""seqvae: a pluggable research toolkit of sequence VAEs.

Importing ``seqvae`` is cheap: it does not import torch. The main entry points are
[`build_model`][seqvae.composer.build_model], [`SequenceVAE`][seqvae.model.SequenceVAE],
``seqvae.training.run_experiment`` and [`run_grid`][seqvae.bench.runner.run_grid].
"""

__version__ = "0.1.0"
