"""Training through Lightning: one run in one folder.

The package is split by concern:

* [`seqvae.training.system`][seqvae.training.system]: the ``VAESystem`` LightningModule, the optimizer and clipping;
* [`seqvae.training.checkpoint`][seqvae.training.checkpoint]: seqvae's checkpoint format and the RNG state of a resume;
* [`seqvae.training.callbacks`][seqvae.training.callbacks]: the resumable training state (``resume.ckpt``) and the heartbeat;
* [`seqvae.training.recipes`][seqvae.training.recipes]: validation-driven recipes (lr decay, early stop, best weights);
* [`seqvae.training.run`][seqvae.training.run]: ``run_experiment`` (train, evaluate, write the run folder) and ``evaluate_run``.

The run folder's file names and its state are [`RunDir`][seqvae.run_dir.RunDir]'s. The names below are
re-exported here, so ``from seqvae.training import run_experiment`` is the one import most users need.
"""

from seqvae.data.loading import default_cache_dir, load_corpus
from seqvae.run_dir import RunDir
from seqvae.training.callbacks import Heartbeat, ResumeCheckpoint
from seqvae.training.checkpoint import CHECKPOINT_FORMAT, ResumeError, load_checkpoint, save_checkpoint
from seqvae.training.recipes import ValidationRecipe
from seqvae.training.run import HEARTBEAT_SECONDS, RunInterrupted, evaluate_run, run_experiment, write_plots
from seqvae.optim import RowSparseSGD, adam, clip_gradients, sgd, sparse_embedding_gradients
from seqvae.training.system import NonFiniteLossError, TermMeans, VAESystem, build_strategy, quiet_lightning

RESUME_FILE = RunDir.RESUME

__all__ = [
    "CHECKPOINT_FORMAT",
    "HEARTBEAT_SECONDS",
    "RESUME_FILE",
    "Heartbeat",
    "NonFiniteLossError",
    "ResumeCheckpoint",
    "ResumeError",
    "RowSparseSGD",
    "RunInterrupted",
    "TermMeans",
    "VAESystem",
    "ValidationRecipe",
    "adam",
    "build_strategy",
    "clip_gradients",
    "default_cache_dir",
    "evaluate_run",
    "load_checkpoint",
    "load_corpus",
    "quiet_lightning",
    "run_experiment",
    "save_checkpoint",
    "sgd",
    "sparse_embedding_gradients",
    "write_plots",
]
