"""Experiment config: presets, typed overrides, errors that name the key, YAML round trip."""

from __future__ import annotations

import re

import pytest
import yaml

from mammoseg.config import (
    ExperimentConfig,
    config_differences,
    load_config,
    parse_overrides,
    save_config,
)


def test_paper_preset_is_the_papers_protocol():
    cfg = load_config("paper")
    assert cfg == ExperimentConfig()  # the dataclass defaults are the paper, and so is the preset
    assert (cfg.epochs.combo, cfg.epochs.focal_tversky, cfg.total_epochs) == (20, 60, 80)
    assert (cfg.optimiser.lr, cfg.optimiser.weight_decay) == (1e-4, 1e-4)
    assert cfg.lr_milestones == [40, 50, 60] and cfg.lr_gamma == 0.1
    assert (cfg.freeze_encoder_epochs, cfg.batch_size, cfg.crop_size, cfg.n_folds) == (2, 32, 448, 5)
    assert (cfg.loss.combo_weight, cfg.loss.alpha) == (0.5, 0.7)
    assert cfg.loss.gamma == 4 / 3
    assert cfg.model.dropout == 0.2


def test_demo_preset_is_small_and_keeps_both_phases():
    cfg = load_config("demo")
    assert cfg.name == "demo"
    assert (cfg.model.encoder, cfg.model.decoder, cfg.model.encoder_weights) == ("resnet22", "unet", None)
    assert cfg.epochs.combo > 0 and cfg.epochs.focal_tversky > 0
    assert all(m < cfg.total_epochs for m in cfg.lr_milestones)
    assert cfg.crop_size < 256


def test_overrides_are_typed():
    cfg = load_config(
        "paper",
        [
            "epochs.focal_tversky=10",
            "batch_size=8",
            "model.encoder=resnet22",
            "model.decoder=fpn",
            "model.encoder_weights=none",
            "model.in_channels=1",
            "optimiser.lr=1e-3",  # YAML 1.1 reads this as a string; it is a number here
            "loss.alpha=1",  # int widened to float
            "lr_milestones=[5, 8]",
            "amp=false",
        ],
    )
    assert cfg.epochs.focal_tversky == 10 and cfg.epochs.combo == 20
    assert cfg.batch_size == 8 and isinstance(cfg.batch_size, int)
    assert (cfg.model.encoder, cfg.model.decoder) == ("resnet22", "fpn")
    assert cfg.model.encoder_weights is None and cfg.model.in_channels == 1
    assert cfg.optimiser.lr == 0.001 and isinstance(cfg.optimiser.lr, float)
    assert cfg.loss.alpha == 1.0 and isinstance(cfg.loss.alpha, float)
    assert cfg.lr_milestones == [5, 8]
    assert cfg.amp is False


def test_parse_overrides_builds_a_tree():
    assert parse_overrides(["a.b=1", "a.c=x", "d=[1, 2]"]) == {"a": {"b": 1, "c": "x"}, "d": [1, 2]}
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["batch_size"])


@pytest.mark.parametrize(
    "override, key",
    [
        ("batchsize=8", "batchsize"),
        ("model.encoderr=resnet22", "model.encoderr"),
        ("epochs.phase3=2", "epochs.phase3"),
    ],
)
def test_unknown_key_is_an_error_naming_it(override, key):
    with pytest.raises(ValueError, match=re.escape(f"unknown config key '{key}'")):
        load_config("paper", [override])


@pytest.mark.parametrize(
    "override, key",
    [
        ("batch_size=eight", "batch_size"),
        ("batch_size=8.5", "batch_size"),
        ("amp=1", "amp"),
        ("optimiser.lr=fast", "optimiser.lr"),
        ("lr_milestones=40", "lr_milestones"),
        ("lr_milestones=[40, x]", "lr_milestones[1]"),
        ("model.encoder=7", "model.encoder"),
        ("model=resnet22", "model"),
        ("epochs.combo=true", "epochs.combo"),
    ],
)
def test_wrong_type_is_an_error_naming_the_key(override, key):
    with pytest.raises(ValueError, match=re.escape(f"config key '{key}'")):
        load_config("paper", [override])


@pytest.mark.parametrize(
    "override, key",
    [
        ("model.encoder=resnet50", "model.encoder"),
        ("model.decoder=deeplab", "model.decoder"),
        ("batch_size=0", "batch_size"),
        ("lr_milestones=[50, 40]", "lr_milestones"),
        ("n_folds=1", "n_folds"),
        ("augmentation=none", "augmentation"),
    ],
)
def test_bad_values_are_errors_naming_the_key(override, key):
    with pytest.raises(ValueError, match=re.escape(f"config key '{key}'")):
        load_config("paper", [override])


def test_yaml_round_trip(tmp_path):
    cfg = load_config("demo", ["seed=7", "optimiser.lr=3e-4", "model.decoder=fpn"])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    back = load_config(path)
    assert back == cfg
    assert yaml.safe_load(path.read_text())["optimiser"]["lr"] == 3e-4


def test_partial_user_file_sits_on_the_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model:\n  decoder: fpn\nepochs:\n  focal_tversky: 5\n")
    cfg = load_config(path, ["batch_size=4"])
    expected = ExperimentConfig(name="mine")
    expected.model.decoder = "fpn"
    expected.epochs.focal_tversky = 5
    expected.batch_size = 4
    assert cfg == expected


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs:\n  combo: twenty\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*'epochs\.combo'"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ValueError, match="list.yaml"):
        load_config(listy)


def test_config_differences_lists_dotted_keys():
    a = load_config("paper").to_dict()
    b = load_config("paper", ["model.decoder=fpn", "seed=3"]).to_dict()
    assert config_differences(a, b) == ["model.decoder", "seed"]
    assert config_differences(a, a) == []
