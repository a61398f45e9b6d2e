"""``ComponentConfig``, the base of every component's ``Config``: a leaf module (pydantic only).

The registry checks plugin classes against it and the experiment config builds on it; both import
it from here, so neither needs the other at import time. ``seqvae.config`` re-exports it (the name
plugins use).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["ComponentConfig"]


class ComponentConfig(BaseModel):
    """Base class of every component's nested ``Config`` (extra fields are forbidden)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)

    kind: str = Field(description="Registry name of the component.")
