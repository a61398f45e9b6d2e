"""Standard benchmark suites: each fixes the data, the model sizes and the budget.

Component flags (``--decoder``, ``--schedule``, ...) still form the grid on top of a suite.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SUITES", "suite_config"]

SUITES: dict[str, dict[str, Any]] = {
    # He et al. 2019's synthetic setting: latent 2, embedding 50, LSTM 50 (encoder and decoder).
    # Budget: 4,000 steps of 32 sentences = 8 epochs of the 16,000 training sentences.
    "synthetic": {
        "data": {"dataset": "synthetic", "batch_size": 32, "eval_batch_size": 256},
        "model": {"latent_dim": 2, "embed_dim": 50, "hidden_size": 50},
        "train": {"max_steps": 4000, "lr": 1e-3, "grad_clip": 5.0},
        "eval": {"split": "test"},
    },
    # Mikolov PTB with the Bowman-style model of Li et al. 2019 / texar / Fu et al. 2019: embedding
    # 256, one-layer LSTM encoder and decoder of 256, latent 32; decoder embedding and output dropout
    # 0.5 (texar, Li et al.). Batch 32, Adam 1e-3, clip 5. Budget: 10,520 steps = 8 epochs of the
    # 42,068 training sentences. Data from --data-dir (the folder with ptb.{train,valid,test}.txt).
    "ptb": {
        "data": {"dataset": {"kind": "ptb"}, "batch_size": 32, "eval_batch_size": 64},
        "model": {"latent_dim": 32, "embed_dim": 256, "hidden_size": 256},
        "encoder": {"kind": "lstm"},
        "decoder": {"kind": "lstm", "embed_dropout": 0.5, "output_dropout": 0.5},
        "train": {"max_steps": 10_520, "lr": 1e-3, "grad_clip": 5.0},
        "eval": {"split": "test"},
    },
}


def suite_config(name: str) -> dict[str, Any]:
    """A fresh copy of the raw config of suite ``name``."""
    import copy

    if name not in SUITES:
        raise ValueError(f"Unknown suite '{name}'. Available: {', '.join(sorted(SUITES))}.")
    return copy.deepcopy(SUITES[name])
