"""The ``start``/``stop`` fields shared by schedules that move beta between two values."""

from __future__ import annotations

from pydantic import Field, model_validator

from seqvae.config import ComponentConfig


class RangeConfig(ComponentConfig):
    """A schedule Config with ``start <= stop``."""

    start: float = Field(0.0, ge=0.0, description="beta at the start (of the run, or of each cycle).")
    stop: float = Field(1.0, ge=0.0, description="beta once the rise is over.")

    @model_validator(mode="after")
    def _ordered(self):
        if self.start > self.stop:
            raise ValueError(f"start ({self.start}) must not exceed stop ({self.stop})")
        return self
