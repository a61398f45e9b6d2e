"""``standard``: the plain loop, one update of every parameter per step with the schedule's beta."""

from __future__ import annotations

from seqvae.config import ComponentConfig
from seqvae.interfaces import Strategy

__all__ = ["StandardStrategy"]


class StandardStrategy(Strategy):
    """Every step: loss with beta = schedule(step), backward, one optimizer step for all parameters."""

    class Config(ComponentConfig):
        """The standard loop has no parameters."""
