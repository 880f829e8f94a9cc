"""Named suites (ATTACK.suite, engine/suites.py): each expands to its documented list with presets, every spec
builds, and suites combine with ATTACK.attacks."""
from __future__ import annotations

import pytest
from tiny_models import TinySeg

from engine.attacks import attack_list, build_from_spec
from engine.suites import SUITES
from util.errors import UserError

RSE = ["padam-ce", "padam-cos", "apgd-mce", "apgd-segpgd", "apgd-js", "apgd-mask-norm-corrlog", "dag-001", "dag-003",
       "pdpgd", "alma-prox"]
DOCUMENTED = {"sea": ["sea"], "rse": RSE, "strongest": RSE + ["sea", "rppgd++", "segpgd", "cospgd"], "legacy": ["bim"]}


@pytest.mark.parametrize("suite", list(DOCUMENTED))
def test_a_suite_expands_to_its_documented_attacks_and_each_builds(tiny_cfg, suite):
    assert sorted(SUITES) == sorted(DOCUMENTED)
    cfg = tiny_cfg("ATTACK.suite", suite)
    specs = attack_list(cfg)
    assert [s.key for s in specs] == DOCUMENTED[suite]
    model = TinySeg(7).eval()
    for spec in specs:
        atk = build_from_spec(spec, model, cfg)
        assert atk.eps == (0.03 if suite == "legacy" else pytest.approx(8 / 255))


def test_rse_presets_are_the_packages(tiny_cfg):
    specs = {s.key: s.params for s in attack_list(tiny_cfg("ATTACK.suite", "rse"))}
    assert specs["padam-ce"]["alpha"] == specs["padam-cos"]["alpha"] == 2 / 255
    assert specs["padam-ce"]["steps"] == 200 and specs["apgd-segpgd"]["steps"] == 300
    assert (specs["dag-001"]["gamma"], specs["dag-003"]["gamma"]) == (0.001, 0.003)
    assert specs["pdpgd"]["primal_lr"] == 0.01 and specs["alma-prox"]["lr_init"] == 1e-4


def test_suites_and_lists_combine(tiny_cfg):
    cfg = tiny_cfg("ATTACK.suite", "legacy", "ATTACK.attacks", "[{name: pgd, eps: 0.03, alpha: 0.01, steps: 2}]")
    assert [(s.key, s.where) for s in attack_list(cfg)] == [("bim", "ATTACK.suite legacy: bim"),
                                                           ("pgd", "ATTACK.attacks[0]")]
    assert [s.key for s in attack_list(tiny_cfg("ATTACK.attacks", "[{name: pgd}]"))] == ["pgd"]  # no suite


def test_suite_errors_name_the_key(tiny_cfg):
    with pytest.raises(UserError, match=r"ATTACK.suite: unknown suite 'strong'.*strongest"):
        attack_list(tiny_cfg("ATTACK.suite", "strong"))
    with pytest.raises(UserError, match=r"ATTACK.attacks\[0\].*'sea' is taken"):
        attack_list(tiny_cfg("ATTACK.suite", "sea", "ATTACK.attacks", "[{name: sea, steps: 4}]"))
