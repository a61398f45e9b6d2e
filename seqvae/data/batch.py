"""``Batch``, the padded batch every component reads: a leaf module (torch only).

The data layer makes batches and the interfaces pass them on; both import the type from here.
``seqvae.interfaces`` re-exports it (the name components and plugins use).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Batch"]


@dataclass
class Batch:
    """A padded batch of sentences.

    Attributes:
        tokens: ``b (t+1)`` long: ``<bos> w_1 .. w_n <eos>`` then padding.
        lengths: ``b`` long: number of predicted tokens per sentence (words + one ``<eos>``).
        pad_id: the padding id.
    """

    tokens: Tensor
    lengths: Tensor
    pad_id: int = 0
    labels: Tensor | None = None

    @property
    def inputs(self) -> Tensor:
        """Decoder inputs ``b t`` (teacher forcing): ``<bos> w_1 .. w_n`` then padding."""
        return self.tokens[:, :-1]

    @property
    def targets(self) -> Tensor:
        """Prediction targets ``b t``: ``w_1 .. w_n <eos>`` then padding."""
        return self.tokens[:, 1:]

    @property
    def mask(self) -> Tensor:
        """``b t`` bool, True where a target is a real token."""
        t = self.tokens.shape[1] - 1
        return torch.arange(t, device=self.lengths.device)[None, :] < self.lengths[:, None]

    @property
    def size(self) -> int:
        return int(self.tokens.shape[0])

    def to(self, device: Any) -> Batch:
        """The same batch on ``device`` (tokens ``b (t+1)``, lengths ``b``, labels ``b``)."""
        labels = self.labels.to(device) if self.labels is not None else None
        return Batch(self.tokens.to(device), self.lengths.to(device), self.pad_id, labels)
