"""The papers' training recipes: validation at the end of every run, the best weights kept, the
learning rate decayed on a validation plateau (best weights restored), early stopping, resumes."""

from __future__ import annotations

import csv

import pytest
import torch

from seqvae.config import ConfigError, validate_experiment
from seqvae.training import load_checkpoint, run_experiment

DATA = {"dataset": {"kind": "synthetic", "n_sentences": 160, "n_train": 100, "n_valid": 30, "vocab_size": 20,
                    "length": 5}, "batch_size": 10, "eval_batch_size": 30}
TINY = {"model": {"latent_dim": 3, "embed_dim": 8, "hidden_size": 12}, "data": DATA, "eval": {"iw_samples": 2}}


def _cfg(**train):
    return validate_experiment({**TINY, "train": {"checkpoint_every": None, **train}})


def _val_rows(run):
    with open(run / "logs" / "metrics.csv") as f:
        return [(int(r["step"]), float(r["val/neg_elbo"])) for r in csv.DictReader(f) if r.get("val/neg_elbo")]


def test_every_run_ends_with_a_validation_even_without_val_every(tmp_path):
    res = run_experiment(_cfg(max_steps=7), tmp_path / "run")
    v = res["validation"]
    assert [h["step"] for h in v["validations"]] == [7]
    assert v["final_neg_elbo"] == v["best_neg_elbo"] and v["checkpoint_weights"] == "last"
    assert [s for s, _ in _val_rows(tmp_path / "run")] == [7]  # in the curves too


def test_keep_best_saves_the_weights_of_the_best_validation(tmp_path):
    """A learning rate so large that validation gets worse after it was best: checkpoint.pt holds
    the best validation's weights, and evaluating them on valid gives that validation's -ELBO."""
    res = run_experiment(_cfg(max_steps=40, val_every=5, keep="best", lr=0.3, optimizer="sgd", grad_clip=0),
                         tmp_path / "run")
    v = res["validation"]
    values = [h["neg_elbo"] for h in v["validations"]]
    assert [h["step"] for h in v["validations"]] == list(range(5, 45, 5))
    assert v["best_neg_elbo"] == min(values) and v["best_step"] == 5 * (values.index(min(values)) + 1)
    assert v["best_step"] != 40, "the test needs a run whose last validation is not its best"
    assert v["checkpoint_weights"] == "best"
    model, cfg, _ = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    from seqvae.data.datamodule import eval_batches
    from seqvae.training import load_corpus

    corpus = load_corpus(cfg.data.dataset)
    torch.manual_seed(cfg.train.seed)  # what validation draws its noise from
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for b in eval_batches(corpus.split("valid"), corpus.vocab, cfg.data.eval_batch_size):
            post = model.encode(b)
            total += float((model.reconstruction_nll(b, post.rsample()) + model.prior.kl(post).per_dim.sum(-1)).sum())
            n += b.size
    assert total / n == pytest.approx(v["best_neg_elbo"], rel=1e-4)


def test_plateau_decay_halves_the_lr_restores_the_best_and_stops_after_max_decays(tmp_path):
    res = run_experiment(_cfg(max_steps=400, val_every=4, lr=0.3, optimizer="sgd", grad_clip=0,
                              lr_decay={"factor": 0.5, "patience": 1, "max_decays": 2}), tmp_path / "run")
    v = res["validation"]
    assert v["lr_decays"] == 2 and "2 learning-rate decays" in v["stopped_early"]
    assert res["steps"] < 400  # stopped by the recipe, not by the budget
    lrs = [h["lr"] for h in v["validations"]]
    assert sorted(set(lrs), reverse=True) == [0.3, 0.15]  # the lr each validation saw; the 2nd decay stopped it
    # a decay happens right after a validation that was no new best
    hist = v["validations"]
    for before, after in zip(hist, hist[1:]):
        if after["lr"] < before["lr"]:
            assert before["neg_elbo"] >= min(h["neg_elbo"] for h in hist[: hist.index(before)])


def test_cosine_restarts_set_the_lr_of_every_step_and_restart_each_period(tmp_path):
    """Fu et al.'s per-cycle cosine learning rate: the lr each validation saw is that of the step before it."""
    import math

    res = run_experiment(_cfg(max_steps=12, val_every=2, lr=0.4, optimizer="sgd", lr_cosine_period=6), tmp_path / "run")
    lrs = {h["step"]: h["lr"] for h in res["validation"]["validations"]}
    expect = {s: 0.4 * 0.5 * (1 + math.cos(math.pi * ((s - 1) % 6) / 6)) for s in range(2, 13, 2)}
    assert lrs == pytest.approx(expect)
    assert lrs[8] > lrs[6]  # restarted: step 7 (index 6) begins the second period at the full lr
    with pytest.raises(ConfigError, match="lr_cosine_period and lr_decay both set the learning rate"):
        _cfg(val_every=2, lr_cosine_period=6, lr_decay={})


def test_early_stop_after_validations_without_a_new_best(tmp_path):
    res = run_experiment(_cfg(max_steps=400, val_every=4, lr=0.5, optimizer="sgd", grad_clip=0, early_stop=2),
                         tmp_path / "run")
    v = res["validation"]
    hist = [h["neg_elbo"] for h in v["validations"]]
    assert "2 validations without a new best" in v["stopped_early"] and res["steps"] < 400
    assert min(hist[-2:]) >= min(hist[:-2])  # the last two were no new best
    assert hist[-1] == v["final_neg_elbo"]


class _Cut(Exception):
    """Stands for a crash at a chosen step."""


@pytest.mark.parametrize("strategy, max_steps, crash", [("standard", 40, 22), ("ae-pretrain", 120, 102)],
                         ids=["standard", "ae-pretrain-until-converged"])
def test_a_resumed_run_takes_the_recipes_decisions_from_its_saved_state(tmp_path, monkeypatch, strategy, max_steps,
                                                                        crash):
    """Crashed two steps after a validation and resumed from the state saved at it (a step with a
    validation: the state is written after it): the same validations, learning rates, decays and
    best weights as a straight run. With ``ae-pretrain`` until converged the crash comes after the
    switch to the VAE: the resumed run stays in that phase and does not reset the decoder again."""
    import seqvae.training as T

    raw = {"strategy": {"kind": "ae-pretrain", "switch": "converged"}} if strategy == "ae-pretrain" else {}
    cfg = validate_experiment({**TINY, **raw, "train": {
        "max_steps": max_steps, "val_every": 5, "lr": 0.3, "optimizer": "sgd", "grad_clip": 0, "keep": "best",
        "checkpoint_every": 10, "lr_decay": {"factor": 0.5, "patience": 1, "max_decays": 5 if raw == {} else 2}}})
    straight = run_experiment(cfg, tmp_path / "straight")
    if raw:
        assert straight["strategy_state"]["vae_phase_started_at_step"] < crash - 2, "the crash must come after the switch"
    original = T.ResumeCheckpoint.on_train_batch_end

    def crash_at(self, trainer, module, *args):
        original(self, trainer, module, *args)
        if trainer.global_step == crash:
            monkeypatch.setattr(T.ResumeCheckpoint, "on_train_batch_end", original)
            raise _Cut()

    monkeypatch.setattr(T.ResumeCheckpoint, "on_train_batch_end", crash_at)
    with pytest.raises(_Cut):
        run_experiment(cfg, tmp_path / "cut")
    resumed = run_experiment(cfg, tmp_path / "cut", resume=True)
    assert resumed["validation"] == straight["validation"]
    assert resumed["metrics"] == straight["metrics"]
    assert resumed["strategy_state"] == straight["strategy_state"]


@pytest.mark.parametrize("train", [{"keep": "best"}, {"early_stop": 3}, {"lr_decay": {}}])
def test_a_recipe_without_validation_is_a_config_error(train):
    with pytest.raises(ConfigError, match=r"train: .*needs? validation during training: set train.val_every"):
        validate_experiment({"train": train})


def test_without_a_progress_bar_training_logs_a_heartbeat_line(tmp_path, monkeypatch, caplog):
    import logging

    import seqvae.training.run as R

    monkeypatch.setattr(R, "HEARTBEAT_SECONDS", 0.0)  # every step
    with caplog.at_level(logging.INFO, logger="seqvae.training"):
        run_experiment(_cfg(max_steps=5), tmp_path / "run")
    beats = [r.getMessage() for r in caplog.records if "tokens/s" in r.getMessage()]
    assert [b.split(":")[0] for b in beats] == [f"step {i}/5" for i in range(1, 6)]
    assert all(", rec " in b and ", kl " in b for b in beats)


def test_the_progress_bar_counts_steps_not_epochs_to_minus_two():
    from types import SimpleNamespace

    from seqvae.training.callbacks import StepProgressBar

    bar = StepProgressBar()
    bar._trainer = SimpleNamespace(global_step=120, max_steps=4000, max_epochs=-1, num_training_batches=315)
    assert bar._get_train_description(2) == "Epoch 3 of 13 (4,000 steps)"
    bar._trainer.num_training_batches = float("inf")  # an iterable of unknown length
    assert bar._get_train_description(0) == "Epoch 1 (4,000 steps)"


def test_tensorboard_logger_writes_events_beside_the_csv(tmp_path):
    """train.loggers: [tensorboard] (``--logger tensorboard``) adds TensorBoard event files; the CSV stays."""
    pytest.importorskip("tensorboardX")
    run_experiment(_cfg(max_steps=4, loggers=["tensorboard"], log_every=2), tmp_path / "run")
    events = list((tmp_path / "run" / "logs" / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    assert (tmp_path / "run" / "logs" / "metrics.csv").exists()


def test_a_logger_whose_package_is_missing_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    with pytest.raises(ConfigError, match=r"train: .*the mlflow logger needs the mlflow package \(pip install mlflow\)"):
        validate_experiment({"train": {"loggers": ["mlflow"]}})
    with pytest.raises(ConfigError, match="train.loggers.0"):
        validate_experiment({"train": {"loggers": ["neptune"]}})


def test_a_short_run_still_writes_a_training_curve_and_its_plot(tmp_path):
    """A 20-step run with log_every 50 logs every 2 steps: 10 window means and training.png."""
    res = run_experiment(_cfg(max_steps=20, log_every=50), tmp_path / "run")
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f) if r.get("train/loss")]
    assert steps == list(range(1, 20, 2))  # Lightning's 0-based step of every second step
    assert "training.png" in res["plots"]


@pytest.mark.parametrize("optimizer_state", ["reset", "best"])
def test_a_decay_restores_the_best_weights_with_a_fresh_or_the_saved_optimizer_state(optimizer_state):
    """restore_best with optimizer_state 'best' loads the Adam moments saved with the best weights
    (a fresh Adam state makes large first steps); 'reset' clears them, as He et al.'s new optimizer."""
    from types import SimpleNamespace

    from seqvae.config import TrainConfig
    from seqvae.training.recipes import ValidationRecipe

    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)

    def train_step():
        opt.zero_grad()
        model(torch.randn(8, 3)).pow(2).sum().backward()
        opt.step()

    cfg = TrainConfig(val_every=1, lr_decay={"factor": 0.5, "patience": 1, "optimizer_state": optimizer_state})
    recipe = ValidationRecipe(cfg)
    trainer = SimpleNamespace(sanity_checking=False, optimizers=[opt], should_stop=False, global_step=1,
                              callback_metrics={"val/neg_elbo": torch.tensor(5.0)})
    module = SimpleNamespace(model=model)
    train_step()
    recipe.on_validation_end(trainer, module)  # the best so far
    best_weight = model.weight.detach().clone()
    best_moment = opt.state[model.weight]["exp_avg"].clone()
    train_step()
    trainer.global_step, trainer.callback_metrics = 2, {"val/neg_elbo": torch.tensor(6.0)}
    recipe.on_validation_end(trainer, module)  # worse: a decay (patience 1)
    assert recipe.decays == 1 and opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert torch.equal(model.weight, best_weight)
    if optimizer_state == "best":
        assert torch.equal(opt.state[model.weight]["exp_avg"], best_moment)
    else:
        assert len(opt.state) == 0


def test_ae_pretrain_until_converged_then_the_vae_with_the_recipe_started_over(tmp_path):
    """Li et al.'s two trainings in one run: the autoencoder (beta 0) until the recipe finds its
    validation reconstruction converged, its best weights back, a fresh decoder, then the VAE from the
    configured learning rate with its own decays and stop."""
    cfg = validate_experiment({**TINY, "strategy": {"kind": "ae-pretrain", "switch": "converged"},
                               "train": {"checkpoint_every": None, "max_steps": 600, "val_every": 4, "lr": 0.3,
                                         "optimizer": "sgd", "grad_clip": 0, "keep": "best",
                                         "lr_decay": {"factor": 0.5, "patience": 1, "max_decays": 2}}})
    res = run_experiment(cfg, tmp_path / "run")
    switch = res["strategy_state"]["vae_phase_started_at_step"]
    v = res["validation"]
    hist = v["validations"]
    (ae,) = v["phases"]
    assert switch is not None and ae["ended_at_step"] == switch and "2 learning-rate decays" in ae["why"]
    assert res["steps"] < 600 and "2 learning-rate decays" in v["stopped_early"]  # phase 2 ended the run
    phase0 = [h for h in hist if h["phase"] == 0]
    phase1 = [h for h in hist if h["phase"] == 1]
    assert phase0 and phase1 and phase0[-1]["step"] == switch and phase1[0]["step"] > switch
    # the autoencoder phase is judged on its reconstruction: -ELBO minus the KL (which beta 0 lets grow)
    assert all(h["objective"] < h["neg_elbo"] for h in phase0)
    assert ae["best"] == min(h["objective"] for h in phase0)
    assert all(h["objective"] == h["neg_elbo"] for h in phase1)
    # the recipe started over: phase 2 begins at the configured lr and decays again twice
    assert phase1[0]["lr"] == 0.3 and sorted({h["lr"] for h in phase1}, reverse=True) == [0.3, 0.15]
    assert v["best_neg_elbo"] == min(h["neg_elbo"] for h in phase1) and v["best_step"] > switch
    with open(tmp_path / "run" / "logs" / "metrics.csv") as f:
        betas = {int(r["step"]): float(r["train/beta"]) for r in csv.DictReader(f) if r.get("train/beta")}
    assert all(b == 0.0 for s, b in betas.items() if s < switch) and all(b == 1.0 for s, b in betas.items() if s > switch)


def test_ae_pretrain_until_converged_needs_the_validation_recipe():
    with pytest.raises(ConfigError, match="switch 'converged'.*train.val_every"):
        validate_experiment({**TINY, "strategy": {"kind": "ae-pretrain", "switch": "converged"},
                             "train": {"max_steps": 50}})
