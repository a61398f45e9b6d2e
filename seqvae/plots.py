"""Plots written into every run folder (matplotlib, PNG, no screen needed).

* ``training.png``: the KL weight beta, the KL and the reconstruction term over training steps, with
  the validation -ELBO when the run validated (from ``logs/metrics.csv``);
* ``latent.png`` (2-d latents only): the posterior means of the evaluation split, coloured by the
  sentence label when the corpus has one (the true mixture component of the synthetic data).
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any

__all__ = ["plot_latent", "plot_training", "read_curves"]

log = logging.getLogger(__name__)


def read_curves(metrics_csv: str | Path) -> dict[str, list[tuple[int, float]]]:
    """Each logged column of a run's ``metrics.csv`` as ``(step, value)`` pairs (empty cells skipped)."""
    curves: dict[str, list[tuple[int, float]]] = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            step = int(row["step"])
            for key, value in row.items():
                if key not in ("epoch", "step") and value not in ("", None):
                    curves.setdefault(key, []).append((step, float(value)))
    return curves


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def plot_training(metrics_csv: str | Path, out: str | Path, title: str = "") -> Path | None:
    """Write the beta / KL / reconstruction figure; None when the log holds no training rows."""
    curves = read_curves(metrics_csv)
    if "train/beta" not in curves:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    panels = [("train/beta", "KL weight beta", None), ("train/kl", "KL (nats/sentence)", "val/kl"),
              ("train/rec", "reconstruction (nats/sentence)", "val/neg_elbo")]
    for ax, (key, label, val_key) in zip(axes, panels):
        steps, values = zip(*curves[key]) if curves.get(key) else ((), ())
        ax.plot(steps, values, lw=1, label="train")
        if val_key and curves.get(val_key):
            vs, vv = zip(*curves[val_key])
            ax.plot(vs, vv, "o-", ms=3, lw=1, label="valid -ELBO" if val_key == "val/neg_elbo" else "valid")
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_latent(means: Any, labels: Any | None, out: str | Path, title: str = "") -> Path:
    """Scatter of 2-d posterior means ``n 2``, coloured by ``labels`` (``n`` ints) when given."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    x, y = means[:, 0], means[:, 1]
    if labels is not None:
        points = ax.scatter(x, y, c=labels, cmap="tab10", s=4, alpha=0.6)
        ax.legend(*points.legend_elements(), title="label", fontsize=7, loc="best")
    else:
        ax.scatter(x, y, s=4, alpha=0.6)
    ax.set_xlabel("$E_q[z_1]$")
    ax.set_ylabel("$E_q[z_2]$")
    ax.set_title(title or "posterior means", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out = Path(out)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
