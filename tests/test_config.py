"""Config: defaults, _base_ merge, overrides, fractions, and an error naming the key for each bad input."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, write_yaml
from util.config import load_config, run_dir, save_config
from util.errors import UserError


def test_defaults_base_merge_and_overrides(tmp_path):
    write_yaml(tmp_path / "base.yaml", "DATA: {name: voc2012, classes: 21}\nTRAIN: {epochs: 50, base_lr: 0.01}\n")
    child = write_yaml(tmp_path / "child.yaml", "_base_: base.yaml\nTRAIN: {epochs: 3}\nMODEL: {layers: 18}\n")
    cfg = load_config(child, ["TRAIN.base_lr", "0.05", "MODEL.deep_stem", "false", "TRAIN.crop_size", "[33, 65]"])
    assert cfg.DATA.name == "voc2012" and cfg.DATA.classes == 21  # from the base
    assert cfg.TRAIN.epochs == 3  # the child wins over the base
    assert cfg.TRAIN.base_lr == 0.05 and cfg.MODEL.deep_stem is False  # overrides win over both
    assert cfg.TRAIN.crop_size == [33, 65]
    assert cfg.TRAIN.momentum == 0.9  # untouched default
    assert cfg.EXP.name == "child"  # the file's stem
    assert run_dir(cfg).parts[-2:] == ("voc2012", "child")


def test_fraction_and_int_promotion(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", "TRAIN: {base_lr: 1/100, crop_size: 97}\n")
    cfg = load_config(path, ["TRAIN.weight_decay", "1", "TEST.stride_rate", "2/3"])
    assert cfg.TRAIN.base_lr == pytest.approx(0.01)
    assert cfg.TRAIN.crop_size == [97, 97]
    assert cfg.TRAIN.weight_decay == 1.0 and isinstance(cfg.TRAIN.weight_decay, float)
    assert cfg.TEST.stride_rate == pytest.approx(2 / 3)
    # YAML 1.1 reads an exponent without a dot as a string; a number key still takes it
    cfg = load_config(write_yaml(tmp_path / "e.yaml", "TRAIN: {weight_decay: 1e-4}\n"), ["TRAIN.base_lr", "5E-3"])
    assert cfg.TRAIN.weight_decay == 1e-4 and cfg.TRAIN.base_lr == 5e-3


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(write_yaml(tmp_path / "c.yaml", "MODEL: {layers: 34}\n"), ["TRAIN.epochs", "7"])
    save_config(cfg, tmp_path / "resolved.yaml")
    again = load_config(tmp_path / "resolved.yaml")
    assert again.MODEL.layers == 34 and again.TRAIN.epochs == 7 and again.EXP.name == "c"
    assert yaml.safe_load((tmp_path / "resolved.yaml").read_text())["EXP"]["name"] == "c"


@pytest.mark.parametrize("text, overrides, needle", [
    ("TRAN: {epochs: 1}\n", [], "unknown section 'TRAN'; did you mean 'TRAIN'"),
    ("TRAIN: {epoch: 1}\n", [], "unknown key 'TRAIN.epoch'; did you mean 'TRAIN.epochs'"),
    ("TRAIN: {epochs: 1.5}\n", [], "TRAIN.epochs must be an integer"),
    ("TRAIN: {base_lr: fast}\n", [], "TRAIN.base_lr must be a number"),
    ("MODEL: {deep_stem: 1}\n", [], "MODEL.deep_stem must be true or false"),
    ("DATA: {name: kitti}\n", [], "DATA.name must be one of"),
    ("DATA: {mean: [0.5, 0.5]}\n", [], "DATA.mean must be a list of 3 numbers"),
    ("TRAIN: [1, 2]\n", [], "section 'TRAIN' must be a mapping"),
    ("", ["TRAIN.epochs"], "has no value"),
    ("", ["epochs", "3"], "write it as SECTION.key"),
    ("", ["TRAIN.lr", "0.1"], "unknown key 'TRAIN.lr'"),
    ("", ["TRAIN.base_lr", "1/0"], "division by zero"),
    ("TRAIN: {epochs: [1\n", [], "not valid YAML"),
])
def test_each_bad_input_names_the_key(tmp_path, text, overrides, needle):
    path = write_yaml(tmp_path / "bad.yaml", text)
    with pytest.raises(UserError, match=None) as info:
        load_config(path, overrides)
    assert needle in str(info.value)


def test_missing_file_and_base_loop(tmp_path):
    with pytest.raises(UserError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    write_yaml(tmp_path / "a.yaml", "_base_: b.yaml\n")
    write_yaml(tmp_path / "b.yaml", "_base_: a.yaml\n")
    with pytest.raises(UserError, match="loops back"):
        load_config(tmp_path / "a.yaml")


def test_scripts_exit_2_with_the_message_and_no_traceback(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", "TRAIN: {epoch: 1}\n")
    for script in ("tool_train/train.py", "tool_test/test.py"):
        proc = subprocess.run([sys.executable, str(ROOT / script), "--config", str(path)],
                              capture_output=True, text=True, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr
        assert "unknown key 'TRAIN.epoch'; did you mean 'TRAIN.epochs'" in proc.stderr
        assert "Traceback" not in proc.stderr


def test_a_file_replaces_its_bases_attack_spec_whole(tmp_path):
    """An attack spec in a file replaces the base's (no parameters of another attack leak in), and `{}` turns a
    base's robust validation off."""
    write_yaml(tmp_path / "base.yaml", "ADV_TRAIN: {method: at, attack: {name: pgd, eps: 0.1, alpha: 0.05, steps: 7},"
                                       " val_attack: {name: pgd, eps: 0.03}}\n")
    child = write_yaml(tmp_path / "child.yaml", "_base_: base.yaml\nADV_TRAIN: {attack: {name: rppgd++, steps: 3},"
                                                " val_attack: {}}\n")
    cfg = load_config(child)
    assert cfg.ADV_TRAIN.attack == {"name": "rppgd++", "steps": 3} and cfg.ADV_TRAIN.val_attack == {}
    assert cfg.ADV_TRAIN.method == "at", "other keys of the section still come from the base"


def test_the_release_recipe_config():
    """config/voc2012/voc2012_pspnet50_sat_release.yaml: the released attack (alpha eps/3 from the variant), the
    release's batch composition, per-process BatchNorm, no robust validation."""
    from tiny_models import TinySeg

    from engine.attacks import attack_spec, build_from_spec
    cfg = load_config(ROOT / "config/voc2012/voc2012_pspnet50_sat_release.yaml")
    a = cfg.ADV_TRAIN
    assert (a.method, a.adv_ratio, a.val_attack, cfg.DIST.sync_bn) == ("release", 0.5, {}, "false")
    atk = build_from_spec(attack_spec(a.attack, "ADV_TRAIN.attack"), TinySeg(), cfg)
    assert atk.variant == "release" and atk.alpha == pytest.approx(0.01) and atk.steps == 3 and atk.pool == "batch"
    assert (cfg.TRAIN.batch_size, cfg.TRAIN.epochs, cfg.TRAIN.crop_size) == (16, 50, [473, 473])
