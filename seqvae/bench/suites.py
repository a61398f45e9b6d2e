"""Standard benchmark suites: each fixes the data, the model sizes and the budget.

Component flags (``--decoder``, ``--schedule``, ...) still form the grid on top of a suite.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SUITES", "suite_config"]

def _file_suite(dataset: str, stem: str, *, embed: int, hidden: int, eval_batch: int) -> dict[str, Any]:
    """A corpus read from ``<stem>.{train,valid,test}.txt`` in ``--data-dir`` with the one-layer LSTM
    VAE of He et al. / Li et al. (latent 32, decoder dropout 0.5 in and out, batch 32, 31,250 steps)."""
    files = {split: f"{stem}.{split}.txt" for split in ("train", "valid", "test")}
    return {
        "data": {"dataset": {"kind": dataset, **files}, "batch_size": 32, "eval_batch_size": eval_batch},
        "model": {"latent_dim": 32, "embed_dim": embed, "hidden_size": hidden},
        "encoder": {"kind": "lstm"},
        "decoder": {"kind": "lstm", "embed_dropout": 0.5, "output_dropout": 0.5},
        "train": {"max_steps": 31_250, "lr": 1e-3, "grad_clip": 5.0},
        "eval": {"split": "test"},
    }


SUITES: dict[str, dict[str, Any]] = {
    # He et al. 2019's synthetic setting (their config_synthetic.py): latent 2, embedding 50, LSTM 50
    # (encoder and decoder), decoder dropout 0.5 on the input embeddings and the output.
    # Budget: 4,000 steps of 32 sentences = 8 epochs of the 16,000 training sentences (He et al.:
    # batch 16, 50 epochs).
    "synthetic": {
        "data": {"dataset": "synthetic", "batch_size": 32, "eval_batch_size": 256},
        "model": {"latent_dim": 2, "embed_dim": 50, "hidden_size": 50},
        "decoder": {"kind": "lstm", "embed_dropout": 0.5, "output_dropout": 0.5},
        "train": {"max_steps": 4000, "lr": 1e-3, "grad_clip": 5.0},
        "eval": {"split": "test"},
    },
    # Mikolov PTB with the Bowman-style model of Li et al. 2019 / texar / Fu et al. 2019: embedding
    # 256, one-layer LSTM encoder and decoder of 256, latent 32; decoder embedding and output dropout
    # 0.5 (texar, Li et al.). Batch 32, Adam 1e-3, clip 5. Budget: 10,520 steps = 8 epochs of the
    # 42,068 training sentences, with the validation -ELBO once per epoch (1,315 steps) as the
    # convergence record. Data from --data-dir (the folder with ptb.{train,valid,test}.txt).
    "ptb": {
        "data": {"dataset": {"kind": "ptb"}, "batch_size": 32, "eval_batch_size": 64},
        "model": {"latent_dim": 32, "embed_dim": 256, "hidden_size": 256},
        "encoder": {"kind": "lstm"},
        "decoder": {"kind": "lstm", "embed_dropout": 0.5, "output_dropout": 0.5},
        "train": {"max_steps": 10_520, "lr": 1e-3, "grad_clip": 5.0, "val_every": 1315},
        "eval": {"split": "test"},
    },
    # The PTB suite trained to convergence with the recipe behind the published PTB table (Li et al.
    # 2019 ran every row of it in He et al. 2019's code): SGD lr 1.0 without momentum, clip 5, weights
    # U(-0.01, 0.01) and embeddings U(-0.1, 0.1), from epoch 15 on the learning rate halved after 2
    # validations (epochs) without a new best validation -ELBO, the best weights restored at each decay,
    # training stopped after 5 decays (or at 100 epochs); the best-on-validation weights are the run's
    # checkpoint.pt. (Adam 1e-3 with this decay stopped the LM at test NLL 105.2: see
    # benchmarks/quality/ptb-converged-reset/.)
    "ptb-converged": {
        "data": {"dataset": {"kind": "ptb"}, "batch_size": 32, "eval_batch_size": 64},
        "model": {"latent_dim": 32, "embed_dim": 256, "hidden_size": 256, "init": "uniform"},
        "encoder": {"kind": "lstm"},
        "decoder": {"kind": "lstm", "embed_dropout": 0.5, "output_dropout": 0.5},
        "train": {"max_steps": 131_500, "optimizer": "sgd", "lr": 1.0, "grad_clip": 5.0, "val_every": 1315,
                  "keep": "best",
                  "lr_decay": {"factor": 0.5, "patience": 2, "max_decays": 5, "start_step": 15 * 1315}},
        "eval": {"split": "test"},
    },
    # Yahoo Answers, Yang et al. 2017's split (100k/10k/10k documents, 20k vocabulary, up to 200 words)
    # as He et al. 2019 ship it: yahoo.{train,valid,test}.txt, one document per line. He et al.'s
    # sizes: embedding 512, LSTM 1024/1024, latent 32, decoder embedding and output dropout 0.5, batch 32.
    # Budget: 31,250 steps = 10 epochs (He et al. train up to 100 epochs with SGD and lr decay).
    "yahoo": _file_suite("text", "yahoo", embed=512, hidden=1024, eval_batch=32),
    # Yelp reviews, Yang et al. 2017's split (100k/10k/10k, 20k vocabulary) as He et al. 2019 ship it:
    # yelp.{train,valid,test}.txt with a rating label per line (LABEL<TAB>text). Sizes and budget as yahoo.
    "yelp": _file_suite("labeled-text", "yelp", embed=512, hidden=1024, eval_batch=32),
    # SNLI sentences, Li et al. 2019's split: snli.{train,valid,test}.txt (tokenised, lower-cased,
    # `<unk>` for rare words). Li et al.'s config: embedding 128, LSTM 512/512, latent 32, decoder
    # dropout 0.5 in and out, batch 32. Budget: 31,250 steps, as yahoo and yelp.
    # Without the train file, `--set data.dataset.train=snli.valid.txt` trains on valid (as the tests do).
    "snli": _file_suite("text", "snli", embed=128, hidden=512, eval_batch=64),
}


def suite_config(name: str) -> dict[str, Any]:
    """A fresh copy of the raw config of suite ``name``."""
    import copy

    if name not in SUITES:
        raise ValueError(f"Unknown suite '{name}'. Available: {', '.join(sorted(SUITES))}.")
    return copy.deepcopy(SUITES[name])
