"""Typed configs: YAML + overrides, errors naming the key, round trip; lr schedules."""

import math

import pytest

from glcnet.config import ExperimentConfig, FinetuneConfig, OptimConfig, PretrainConfig, load_config, save_config
from glcnet.engine import lr_factor
from glcnet.errors import GlcnetError


def test_overrides_and_types():
    cfg = load_config(PretrainConfig, None, ["optim.lr=0.01", "views.scale=[0.5, 0.9]", "method.style=false"])
    assert cfg.optim.lr == 0.01 and cfg.views.scale == (0.5, 0.9) and cfg.method.style is False
    assert cfg.optim.epochs == 400  # untouched default


def test_nested_defaults_are_kept_when_partially_overridden():
    cfg = load_config(FinetuneConfig, None, ["optim.epochs=3"])
    assert cfg.optim.epochs == 3
    assert cfg.optim.lr == 1e-4 and cfg.optim.schedule == "exp"  # fine-tune defaults, not pretrain ones


def test_unknown_key_lists_valid_keys():
    with pytest.raises(GlcnetError, match=r"unknown key 'lrr' \(valid: optimizer, lr, betas"):
        load_config(PretrainConfig, None, ["optim.lrr=1"])


def test_bad_type_names_the_key():
    with pytest.raises(GlcnetError, match=r"optim\.epochs: expected an integer"):
        load_config(PretrainConfig, None, ["optim.epochs=ten"])


def test_packaged_config_and_round_trip(tmp_path):
    cfg = load_config(PretrainConfig, "pretrain_paper")
    assert cfg.model.encoder == "resnet50" and cfg.trainer.batch_size == 256 and cfg.optim.epochs == 400
    save_config(cfg, tmp_path / "c.yaml")
    assert load_config(PretrainConfig, tmp_path / "c.yaml") == cfg
    exp = ExperimentConfig(methods=["none", "glcnet"], fractions=[0.01, 0.05])
    save_config(exp, tmp_path / "e.yaml")
    assert load_config(ExperimentConfig, tmp_path / "e.yaml") == exp


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(GlcnetError, match="config file not found"):
        load_config(PretrainConfig, tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: [1, 2\n")
    with pytest.raises(GlcnetError, match="bad.yaml: not valid YAML"):
        load_config(PretrainConfig, bad)


def test_lr_schedules():
    cos = OptimConfig(lr=1e-3, min_lr=1e-5, epochs=10, schedule="cosine")
    assert lr_factor(0, cos) == pytest.approx(1.0)
    assert lr_factor(5, cos) == pytest.approx(0.01 + 0.99 * 0.5)
    assert lr_factor(10, cos) == pytest.approx(0.01)
    exp = OptimConfig(schedule="exp", gamma=0.98)
    assert lr_factor(3, exp) == pytest.approx(0.98**3)
    warm = OptimConfig(lr=1.0, min_lr=0.0, epochs=12, warmup_epochs=2, schedule="cosine")
    assert lr_factor(0, warm) == 0.5 and lr_factor(2, warm) == pytest.approx(1.0)
    assert lr_factor(7, warm) == pytest.approx(0.5 * (1 + math.cos(math.pi * 0.5)))
    with pytest.raises(GlcnetError, match="unknown schedule"):
        lr_factor(0, OptimConfig(schedule="step"))


def test_list_override_keeps_method_entries_with_brackets():
    cfg = load_config(ExperimentConfig, None, ["methods=[glcnet,glcnet[method.lam=0.25,views.scale=[0.2,1.0]]]",
                                               "seeds=[0, 1]", "fractions=[0.01,0.05]"])
    assert cfg.methods == ["glcnet", "glcnet[method.lam=0.25,views.scale=[0.2,1.0]]"]
    assert cfg.seeds == [0, 1] and cfg.fractions == [0.01, 0.05]
    assert load_config(ExperimentConfig, None, ["methods=[]"]).methods == []


def test_unknown_key_and_bad_type_are_one_line_with_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("optim: {lr: 0.1, epochs: ten}\n")
    with pytest.raises(GlcnetError, match=r"bad\.yaml: optim\.epochs: expected an integer, got 'ten'") as e:
        load_config(PretrainConfig, bad)
    assert "\n" not in str(e.value)
    with pytest.raises(GlcnetError, match=r"^unknown key 'optimm' \(valid: data, out, seed, model, views"):
        load_config(PretrainConfig, None, ["optimm.lr=1"])
    with pytest.raises(GlcnetError, match=r"views\.scale: expected a list of 2 values, got \[0\.5\]"):
        load_config(PretrainConfig, None, ["views.scale=[0.5]"])
    with pytest.raises(GlcnetError, match=r"views: expected a mapping, got 5"):
        load_config(PretrainConfig, None, ["views=5"])
    with pytest.raises(GlcnetError, match=r"views\.rgb_bands\[0\]: expected an integer, got 'red'"):
        load_config(PretrainConfig, None, ["views.rgb_bands=red"])
    assert load_config(PretrainConfig, None, ["views.rgb_bands=null"]).views.rgb_bands is None
    with pytest.raises(GlcnetError, match="expected key=value"):
        load_config(PretrainConfig, None, ["optim.lr"])
