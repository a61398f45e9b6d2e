"""Which process of a multi-process (DDP) launch this is, read from the launcher's environment.

Lightning's DDP launcher, ``torchrun`` and SLURM start every process with the same command line;
only global rank 0 writes run folders, evaluates and prints. This module imports nothing heavy, so
the command line can ask before it loads torch.
"""

from __future__ import annotations

import os

__all__ = ["global_rank", "is_rank_zero"]


def global_rank() -> int:
    """This process's global rank: ``RANK``, else ``SLURM_PROCID``, else from ``NODE_RANK``/``LOCAL_RANK``.

    0 for a process that no launcher started (the usual single-process run).
    """
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    node, local = os.environ.get("NODE_RANK", "0"), os.environ.get("LOCAL_RANK", "0")
    if node.isdigit() and local.isdigit() and (int(node) or int(local)):
        return max(1, int(node) * 1000 + int(local))  # non-zero is all that matters without RANK
    return 0


def is_rank_zero() -> bool:
    """Whether this process is global rank 0 (the one that writes and reports)."""
    return global_rank() == 0
