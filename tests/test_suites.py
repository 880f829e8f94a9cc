"""Named attack suites (ATTACK.suite, engine/suites.py): each expands to the list docs/evaluation.md documents, at
ATTACK.suite_eps; suites and ATTACK.attacks combine; every preset builds."""
from __future__ import annotations

import re

import pytest
from tiny_models import TinySeg

from attack import build_attack
from conftest import ROOT
from engine.attacks import attack_list
from engine.suites import SUITES, suite_specs
from util.errors import UserError

COUNTS = [100.0] * 7


def documented() -> dict[str, list[str]]:
    """The suite table of docs/evaluation.md: suite -> its result keys in order."""
    text = (ROOT / "docs/evaluation.md").read_text()
    rows = re.findall(r"^\| `([a-z]+)` \| ([^|]+) \|", text, flags=re.M)
    return {name: re.findall(r"`([^`]+)`", cell) for name, cell in rows if name in SUITES}


def test_each_suite_expands_to_its_documented_list():
    docs = documented()
    assert sorted(docs) == sorted(SUITES.names())
    for name in SUITES.names():
        keys = [s.get("key", s["name"]) for s in suite_specs(name, 8 / 255)]
        assert keys == docs[name], name
    assert suite_specs("strongest", 4 / 255) == suite_specs("rse", 4 / 255) + suite_specs("sea", 4 / 255) + \
        suite_specs("strongest", 4 / 255)[-3:]
    assert [s["eps"] for s in suite_specs("rse", 4 / 255)] == [4 / 255] * 10
    assert suite_specs("legacy", 8 / 255) == [{"name": "bim", "eps": 0.03, "alpha": 0.01, "steps": 2}]


@pytest.mark.parametrize("name", ["sea", "rse", "strongest", "legacy"])
def test_every_preset_builds(name):
    model = TinySeg()
    for spec in suite_specs(name, 8 / 255):
        params = {k: v for k, v in spec.items() if k not in ("name", "key")}
        if spec["name"] == "sea":
            params["class_counts"] = COUNTS
        atk = build_attack(spec["name"], model, **params)
        assert atk.eps == pytest.approx(spec["eps"])


def test_a_suite_and_a_list_combine_and_bad_names_are_refused(tiny_cfg):
    cfg = tiny_cfg("ATTACK.suite", "sea", "ATTACK.suite_eps", "4/255", "ATTACK.attacks", "[{name: pgd, eps: 4/255}]")
    specs = attack_list(cfg)
    assert [s.key for s in specs] == ["sea", "pgd"] and specs[0].params["eps"] == 4 / 255
    cfg = tiny_cfg("ATTACK.suite", "sea", "ATTACK.attacks", "[{name: sea, steps: 3}]")
    with pytest.raises(UserError, match="ATTACK.attacks\\[0\\]: result name 'sea' is taken"):
        attack_list(cfg)
    with pytest.raises(UserError, match="ATTACK.suite must be one of .*; got 'rs'; did you mean 'rse'"):
        attack_list(tiny_cfg("ATTACK.suite", "rs"))
    with pytest.raises(UserError, match="ATTACK.suite_eps must be in \\[0, 1\\]"):
        tiny_cfg("ATTACK.suite", "rse", "ATTACK.suite_eps", "8")
