"""Config validation: every error reported at once with its path; safe loading; overrides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from seqvae.config import (
    ConfigError,
    ExperimentConfig,
    apply_overrides,
    load_config_file,
    validate_experiment,
)


def test_defaults_resolve_components():
    cfg = validate_experiment({})
    assert cfg.component_names() == {"encoder": "lstm", "decoder": "lstm", "prior": "gaussian",
                                     "schedule": "constant", "regularizers": [], "strategy": "standard",
                                     "dataset": "synthetic"}
    assert type(cfg.decoder).__qualname__ == "RNNDecoderConfig"


def test_every_error_is_listed_with_its_path():
    raw = {
        "decoder": {"kind": "lstm", "num_layers": -2, "typo_field": 1},
        "model": {"latent_dim": "big"},
        "train": {"lr": -1},
        "regularizers": ["word-dropout", {"kind": "free-bits", "threshold": "x"}],
        "unknown_top": True,
    }
    with pytest.raises(ConfigError) as info:
        validate_experiment(raw, source="exp.yaml")
    msg = str(info.value)
    assert msg.startswith("Invalid exp.yaml: 6 error(s)")
    for path in ("decoder.num_layers", "decoder.typo_field", "model.latent_dim", "train.lr",
                 "regularizers.1.threshold", "unknown_top"):
        assert f"  {path}: " in msg, path


def test_unknown_component_in_config_suggests():
    with pytest.raises(ConfigError, match=r"schedule: Unknown schedule 'sigmoud'\. Did you mean 'sigmoid'\?"):
        validate_experiment({"schedule": "sigmoud"})


def test_mapping_without_kind_means_the_default_component():
    cfg = validate_experiment({"decoder": {"num_layers": 2}})
    assert cfg.decoder.kind == "lstm" and cfg.decoder.num_layers == 2


def test_cross_field_rules():
    with pytest.raises(ConfigError, match="start .* must not exceed stop"):
        validate_experiment({"schedule": {"kind": "linear", "start": 1.0, "stop": 0.5}})
    with pytest.raises(ConfigError, match="leave a test split"):
        validate_experiment({"data": {"dataset": {"kind": "synthetic", "n_sentences": 100, "n_train": 90,
                                                  "n_valid": 10}}})


def test_overrides_apply_before_validation():
    raw = apply_overrides({"decoder": "gru", "regularizers": ["word-dropout"]},
                          ["decoder.num_layers=3", "regularizers.0.rate=0.5", "train.seed=7", "schedule=cyclical"])
    cfg = validate_experiment(raw)
    assert (cfg.decoder.kind, cfg.decoder.num_layers) == ("gru", 3)
    assert cfg.regularizers[0].rate == 0.5 and cfg.train.seed == 7 and cfg.schedule.kind == "cyclical"
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        apply_overrides({}, ["decoder.num_layers"])
    with pytest.raises(ConfigError, match="not an index"):
        apply_overrides({"regularizers": []}, ["regularizers.3.rate=1"])


def test_yaml_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("decoder: lstm\ntrain:\n  lr: [1, 2\n  seed: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml:\d+: malformed YAML"):
        load_config_file(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config_file(tmp_path / "missing.yaml")
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config_file(tmp_path / "list.yaml")


def test_yaml_is_loaded_safely(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("decoder: !!python/object/apply:os.system ['echo pwned']\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        load_config_file(evil)


@given(
    latent=st.integers(1, 64), layers=st.integers(1, 4), rate=st.floats(0, 1),
    sched=st.sampled_from(["constant", "linear", "sigmoid", "cyclical"]),
    inj=st.sampled_from(["init", "concat", "both"]),
)
def test_valid_configs_round_trip(latent, layers, rate, sched, inj):
    raw = {"model": {"latent_dim": latent}, "decoder": {"kind": "gru", "num_layers": layers, "z_injection": inj},
           "schedule": sched, "regularizers": [{"kind": "word-dropout", "rate": rate}, "free-bits"]}
    cfg = validate_experiment(raw)
    again = ExperimentConfig.model_validate(cfg.model_dump(mode="json"))
    assert again == cfg
    assert again.model_dump(mode="json") == cfg.model_dump(mode="json")


@given(field=st.sampled_from(["latent_dim", "embed_dim", "hidden_size"]), value=st.integers(-100, 0))
def test_invalid_sizes_point_at_their_path(field, value):
    with pytest.raises(ConfigError, match=rf"model\.{field}: Input should be greater than or equal to 1"):
        validate_experiment({"model": {field: value}})


@pytest.mark.parametrize(("name", "cls"), [("adam", "Adam"), ("sgd", "SGD")])
def test_train_optimizer_choice_reaches_the_training_loop(name, cls):
    from seqvae.composer import build_model
    from seqvae.data.vocab import SPECIALS, Vocab
    from seqvae.training import VAESystem

    cfg = validate_experiment({"model": {"latent_dim": 2, "embed_dim": 4, "hidden_size": 4},
                               "train": {"optimizer": name, "lr": 0.5}})
    opt = VAESystem(build_model(cfg, Vocab([*SPECIALS, "a", "b"])), cfg).configure_optimizers()
    import torch

    assert isinstance(opt, getattr(torch.optim, cls)) and opt.param_groups[0]["lr"] == 0.5
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0  # plain SGD, as He et al. and Li et al.
    with pytest.raises(ConfigError, match="train.optimizer"):
        validate_experiment({"train": {"optimizer": "rmsprop"}})
