"""``dilated-cnn``: a causal dilated convolutional decoder (Yang et al. 2017, "Improved VAEs for text").

A weaker decoder than an LSTM: each position sees only the last ``receptive_field`` inputs, so the
sentence's longer-range content has to come through z. z is concatenated to every input embedding.
"""

from __future__ import annotations

from typing import Any, Literal

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from pydantic import Field, model_validator
from torch import Tensor, nn

from seqvae.config import ComponentConfig
from seqvae.interfaces import BuildContext, Decoder

__all__ = ["DilatedCNNDecoder", "VARIANTS", "receptive_field"]

#: Yang et al. 2017's dilation stacks (one entry per convolution layer).
VARIANTS: dict[str, list[int]] = {
    "small": [1, 2, 4],
    "medium": [1, 2, 4, 8, 16],
    "large": [1, 2, 4, 8, 16, 1, 2, 4, 8, 16],
}


def receptive_field(dilations: list[int], kernel_size: int) -> int:
    """Positions (the current one included) that the logits at one position depend on.

    >>> receptive_field([1, 2, 4], 3)
    15
    """
    return 1 + (kernel_size - 1) * sum(dilations)


class _Block(nn.Module):
    """Residual bottleneck block: x + up(relu(dilated_conv(relu(down(relu(x)))))), causal."""

    def __init__(self, channels: int, kernel_size: int, dilation: int, dropout: float):
        super().__init__()
        mid = max(1, channels // 2)
        self.down = nn.Conv1d(channels, mid, 1)
        self.conv = nn.Conv1d(mid, mid, kernel_size, dilation=dilation)
        self.up = nn.Conv1d(mid, channels, 1)
        self.dropout = nn.Dropout(dropout)
        self.history = (kernel_size - 1) * dilation  # past positions the conv reads

    def forward(self, x: Tensor) -> Tensor:
        """``b c t -> b c t``."""
        h = F.relu(self.down(F.relu(x)))  # b m t
        h = self.conv(F.pad(h, (self.history, 0)))  # b m t: left padding only, so causal
        return x + self.dropout(self.up(F.relu(h)))

    def step(self, x: Tensor, cache: Tensor) -> tuple[Tensor, Tensor]:
        """One position: ``x: b c``, ``cache: b m history`` (the conv's last inputs)."""
        h = F.relu(self.down(F.relu(x[:, :, None])))  # b m 1
        window = torch.cat([cache, h], dim=-1)  # b m (history+1)
        y = self.conv(window)  # b m 1
        return x + self.dropout(self.up(F.relu(y)))[:, :, 0], window[:, :, 1:]


class DilatedCNNDecoder(Decoder):
    """Causal dilated CNN p(x|z): embed, concat z, residual dilated blocks, project to the vocabulary.

    The receptive field is ``1 + (kernel_size - 1) * sum(dilations)`` positions
    (``receptive_field``): small 15, medium 63, large 125 with kernel 3. ``step()`` keeps, per
    block, the last ``(kernel_size - 1) * dilation`` inputs of its convolution, so generation costs
    O(1) per token.
    """

    class Config(ComponentConfig):
        variant: Literal["small", "medium", "large", "custom"] = Field(
            "medium", description="Yang et al.'s dilation stacks: small [1,2,4], medium [1,2,4,8,16], "
            "large [1,2,4,8,16,1,2,4,8,16]; custom = use 'dilations'.",
        )
        dilations: list[int] | None = Field(None, description="Dilation per layer (with variant 'custom').")
        kernel_size: int = Field(3, ge=2, le=15, description="Convolution width.")
        channels: int | None = Field(None, ge=2, description="Channels of the residual stream; None = model.hidden_size.")
        dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on every block's output.")
        embed_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout on input embeddings.")
        output_dropout: float = Field(0.0, ge=0.0, lt=1.0, description="Dropout before the vocabulary layer.")

        @model_validator(mode="after")
        def _dilations(self) -> DilatedCNNDecoder.Config:
            if self.variant == "custom":
                if not self.dilations or any(d < 1 for d in self.dilations):
                    raise ValueError("variant 'custom' needs 'dilations', a list of integers >= 1")
            elif self.dilations is not None:
                raise ValueError(f"'dilations' is only for variant 'custom' (variant '{self.variant}' fixes them)")
            return self

    def __init__(self, config: Config, ctx: BuildContext):
        super().__init__(config, ctx)
        self.dilations = list(config.dilations or VARIANTS[config.variant])
        channels = config.channels or ctx.hidden_size
        self.embed = nn.Embedding(ctx.vocab_size, ctx.embed_dim, padding_idx=ctx.pad_id)
        self.embed_dropout = nn.Dropout(config.embed_dropout)
        self.inp = nn.Linear(ctx.embed_dim + ctx.latent_dim, channels)
        self.blocks = nn.ModuleList(_Block(channels, config.kernel_size, d, config.dropout) for d in self.dilations)
        self.output_dropout = nn.Dropout(config.output_dropout)
        self.out = nn.Linear(channels, ctx.vocab_size)

    @property
    def receptive_field(self) -> int:
        """Positions (the current one included) that one position's logits depend on."""
        return receptive_field(self.dilations, self.config.kernel_size)

    def _inputs(self, tokens: Tensor, z: Tensor) -> Tensor:
        x = self.embed_dropout(self.embed(tokens))  # b t e
        x = torch.cat([x, repeat(z, "b d -> b t d", t=tokens.shape[1])], dim=-1)  # b t (e+d)
        return self.inp(x)  # b t c

    def forward(self, inputs: Tensor, z: Tensor, lengths: Tensor) -> Tensor:
        """Teacher-forced logits ``b t v``."""
        h = rearrange(self._inputs(inputs, z), "b t c -> b c t")
        for block in self.blocks:
            h = block(h)
        return self.out(self.output_dropout(rearrange(h, "b c t -> b t c")))  # b t v

    def init_state(self, z: Tensor) -> dict[str, Any]:
        """Empty (zero) histories, as the left padding of ``forward``."""
        b = z.shape[0]
        caches = [z.new_zeros(b, blk.conv.in_channels, blk.history) for blk in self.blocks]
        return {"z": z, "caches": caches}

    def step(self, token: Tensor, state: dict[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """Logits ``b v`` after feeding ``token: b``."""
        h = self._inputs(token[:, None], state["z"])[:, 0]  # b c
        caches = []
        for block, cache in zip(self.blocks, state["caches"]):
            h, cache = block.step(h, cache)
            caches.append(cache)
        return self.out(self.output_dropout(h)), {"z": state["z"], "caches": caches}
