"""seqvae-transformer: a Transformer encoder and decoder registered with seqvae through entry points."""

__version__ = "0.1.0"
