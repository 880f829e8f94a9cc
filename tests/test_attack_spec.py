"""The attack spec (docs/design.md, Config): one form for ADV_TRAIN.attack, ADV_TRAIN.val_attack and ATTACK.attacks."""
from __future__ import annotations

import pytest
from tiny_models import TinySeg

from engine.attacks import attack_list, attack_spec, build_from_spec
from engine.recipes import RECIPES
from util.config import load_config
from util.errors import UserError


def test_attack_list_reads_every_entry(tiny_cfg):
    cfg = tiny_cfg("ATTACK.attacks", "[{name: pgd, eps: 8/255, steps: 2}, {name: pgd, key: pgd-l2, norm: l2}]")
    specs = attack_list(cfg)
    assert [(s.key, s.name) for s in specs] == [("pgd", "pgd"), ("pgd-l2", "pgd")]
    assert specs[0].params == {"eps": 8 / 255, "steps": 2} and specs[0].where == "ATTACK.attacks[0]"
    assert specs[1].describe() == {"name": "pgd", "key": "pgd-l2", "norm": "l2"}
    with pytest.raises(UserError, match=r"ATTACK.attacks\[1\].*'pgd' is taken"):
        attack_list(tiny_cfg("ATTACK.attacks", "[{name: pgd}, {name: pgd, steps: 3}]"))
    with pytest.raises(UserError, match=r"ATTACK.attacks\[0\].*'clean' is taken"):
        attack_list(tiny_cfg("ATTACK.attacks", "[{name: pgd, key: clean}]"))


def test_one_parser_for_every_place_that_names_an_attack(tiny_cfg):
    cfg = tiny_cfg()
    model = TinySeg()
    for where in ("ADV_TRAIN.attack", "ADV_TRAIN.val_attack", "ATTACK.attacks[0]"):
        with pytest.raises(UserError, match=rf"{where.replace('[', '.').replace(']', '.')} \(pgd\): pgd has no "
                                            "parameter stpes"):
            build_from_spec(attack_spec({"name": "pgd", "stpes": 3}, where), model, cfg)
        with pytest.raises(UserError, match=rf"{where.replace('[', '.').replace(']', '.')}: unknown attack 'pgdd'"):
            attack_spec({"name": "pgdd"}, where)
        with pytest.raises(UserError, match="a mapping with a 'name'"):
            attack_spec({"steps": 3}, where)
    atk = build_from_spec(attack_spec({"name": "apgd-mce-bal", "steps": 2}, "k"), model, cfg)  # training counts
    assert atk.weights is not None and len(atk.class_counts) == 7
    # the counts go where MCE-Bal is computed, and nowhere else (SEA without it would refuse them)
    assert build_from_spec(attack_spec({"name": "sea", "steps": 4}, "k"), model, cfg).runs[0].weights is not None
    assert build_from_spec(attack_spec({"name": "sea", "steps": 4, "losses": ["mce", "js"]}, "k"), model,
                           cfg).class_counts is None
    tracked = build_from_spec(attack_spec({"name": "apgd-ce", "track_loss": "mce-bal"}, "k"), model, cfg)
    assert tracked.weights is not None
    assert build_from_spec(attack_spec({"name": "apgd-ce"}, "k"), model, cfg).weights is None
    atk = build_from_spec(attack_spec({"name": "pgd"}, "k"), model, tiny_cfg("DATA.ignore_index", "250"))
    assert atk.ignore_index == 250
    release = build_from_spec(attack_spec({"name": "rppgd++", "variant": "release"}, "k"), model, cfg)
    assert release.mean == list(cfg.DATA.mean) and release.std == list(cfg.DATA.std), "the config's normalisation"
    assert build_from_spec(attack_spec({"name": "rppgd++"}, "k"), model, cfg).mean is None


def test_adv_train_and_attack_config_keys(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("ADV_TRAIN: {method: at, attack: {name: rppgd++, eps: 4/255, variant: release}}\n")
    cfg = load_config(path, ["ADV_TRAIN.attack.steps", "7", "ATTACK.protocol", "legacy",
                             "ADV_TRAIN.val_attack", "{name: pgd, steps: 3}"])
    assert cfg.ADV_TRAIN.attack == {"name": "rppgd++", "eps": 4 / 255, "variant": "release", "steps": 7}
    assert cfg.ADV_TRAIN.val_attack == {"name": "pgd", "steps": 3}
    assert cfg.ATTACK.protocol == "legacy" and cfg.ADV_TRAIN.adv_ratio == 0.5
    default = load_config(tmp_path / "c.yaml", ["ADV_TRAIN.attack", "{name: pgd}"]).ADV_TRAIN.attack
    assert default == {"name": "pgd"}, "a whole mapping replaces the spec"
    with pytest.raises(UserError, match="ADV_TRAIN.method must be one of at, none, pirat, release; got 'pgd-at'"):
        RECIPES.get(load_config(path, ["ADV_TRAIN.method", "pgd-at"]).ADV_TRAIN.method)  # the recipe registry
    for overrides, message in ((["ADV_TRAIN.adv_ratio", "0"], "adv_ratio"),
                               (["ATTACK.attacks", "[pgd]"], "ATTACK.attacks must be a list of mappings"),
                               (["ADV_TRAIN.attack", "3"], "ADV_TRAIN.attack must be a mapping"),
                               (["ADV_TRAIN.epochs.x", "3"], "unknown key 'ADV_TRAIN.epochs'"),
                               (["TRAIN.epochs.x", "3"], "only mapping-typed keys")):
        with pytest.raises(UserError, match=message):
            load_config(path, overrides)


def test_the_old_params_form_is_an_error_that_shows_the_new_form(tmp_path):
    path = tmp_path / "old.yaml"
    path.write_text("ADV_TRAIN: {method: at, attack: pgd, params: {eps: 0.1, steps: 3}}\n")
    new_form = r"ADV_TRAIN.params is gone.*ADV_TRAIN.attack \{name: pgd, eps: 0.1, steps: 3\}"
    with pytest.raises(UserError, match=new_form):
        load_config(path)
    ok = tmp_path / "ok.yaml"
    ok.write_text("ADV_TRAIN: {method: at}\n")
    with pytest.raises(UserError, match=r"ADV_TRAIN.params is gone.*write ADV_TRAIN.attack.steps 7"):
        load_config(ok, ["ADV_TRAIN.params.steps", "7"])
    with pytest.raises(UserError, match=r"params is gone.*write ADV_TRAIN.attack \{name: rppgd\+\+, eps: 0.1"):
        load_config(ok, ["ADV_TRAIN.params", "{eps: 0.1}"])
    with pytest.raises(UserError, match=r"ADV_TRAIN.attack is an attack spec.*ADV_TRAIN.attack \{name: segpgd\}"):
        load_config(ok, ["ADV_TRAIN.attack", "segpgd"])
