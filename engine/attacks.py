"""Attacks from the config: the one attack spec of ADV_TRAIN.attack, ADV_TRAIN.val_attack and ATTACK.attacks.

A spec is the mapping `{name: <registry name>, key: <result name, optional>, <build_attack parameters>}`.
`attack_spec` reads one, `attack_list` reads ATTACK.attacks, and `build_from_spec` builds the attack on a model
with what the config knows and the attack cannot: DATA.ignore_index, the training list's class pixel counts for
MCE-Bal (apgd-mce-bal, sea, or MCE-Bal as a tracked loss), and DATA.mean/std for the release RP-PGD start (the
spec's own values win).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from attack import ATTACKS, Attack, attack_parameters, build_attack
from engine.suites import suite_specs
from util.data.class_counts import class_pixel_counts
from util.errors import UserError


def uses_mce_bal(name: str, params: dict[str, Any]) -> bool:
    """Whether attack `name` with `params` computes MCE-Bal, whose class weights come from the training set's class
    frequencies: APGD's loss (fixed by the name) or tracked loss, or one of SEA's losses or its tracked loss."""
    defaults = attack_parameters(name)
    losses = [name.removeprefix("apgd-")] if name.startswith("apgd-") else []
    value = params.get("losses", defaults.get("losses", ()))
    losses += [value] if isinstance(value, str) else list(value)
    losses.append(params.get("track_loss", defaults.get("track_loss")))
    return "mce-bal" in losses


@dataclass(frozen=True)
class AttackSpec:
    """One attack as the config names it."""
    name: str                                   # registry name
    key: str                                    # result name (default: the registry name)
    params: dict[str, Any] = field(default_factory=dict)
    where: str = ""                             # the config key it came from, for messages

    def describe(self) -> dict:
        """The mapping form, as a config would write it."""
        return {"name": self.name, **({"key": self.key} if self.key != self.name else {}), **self.params}


def attack_spec(value: Any, where: str) -> AttackSpec:
    """Read one spec; a UserError names `where` and shows the expected form."""
    form = "{name: pgd, eps: 0.03, alpha: 0.01, steps: 3}"
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise UserError(f"{where}: an attack is a mapping with a 'name' and its parameters, e.g. {form}; "
                        f"got {value!r}")
    if value["name"] not in ATTACKS:
        raise UserError(f"{where}: unknown attack {value['name']!r}; choose one of {', '.join(ATTACKS)}")
    key = value.get("key", value["name"])
    if not isinstance(key, str) or not key:
        raise UserError(f"{where}: 'key' (the result name) must be a non-empty string; got {key!r}")
    params = {k: v for k, v in value.items() if k not in ("name", "key")}
    return AttackSpec(name=value["name"], key=key, params=params, where=where)


def attack_specs(items, where: str) -> list[AttackSpec]:
    """The specs of a list of attack mappings (or AttackSpecs) named `where` in messages; result names must be unique
    and not 'clean'."""
    specs, seen = [], set()
    for i, item in enumerate(items):
        spec = item if isinstance(item, AttackSpec) else attack_spec(item, f"{where}[{i}]")
        if spec.key in seen or spec.key == "clean":
            raise UserError(f"{spec.where}: result name '{spec.key}' is taken; give this entry its own 'key'")
        seen.add(spec.key)
        specs.append(spec)
    return specs


def attack_list(cfg) -> list[AttackSpec]:
    """The specs of ATTACK.suite (engine/suites.py) followed by those of ATTACK.attacks; result names must differ."""
    suite = [attack_spec(s, f"ATTACK.suite {cfg.ATTACK.suite}: {s.get('key', s['name'])}")
             for s in suite_specs(cfg.ATTACK.suite)]
    return attack_specs(suite + [attack_spec(a, f"ATTACK.attacks[{i}]") for i, a in enumerate(cfg.ATTACK.attacks)],
                        "ATTACK.attacks")


def build_from_spec(spec: AttackSpec, model: nn.Module, cfg) -> Attack:
    """build_attack(spec.name, model, **params) with the config's defaults; any error names the spec's key."""
    params = dict(spec.params)
    allowed = attack_parameters(spec.name)
    if uses_mce_bal(spec.name, params) and "class_counts" not in params and "class_weights" not in params:
        params["class_counts"] = class_pixel_counts(cfg)
    if "ignore_index" in allowed:
        params.setdefault("ignore_index", cfg.DATA.ignore_index)
    if "mean" in allowed and params.get("variant") == "release":  # the release start works in normalised space
        params.setdefault("mean", list(cfg.DATA.mean))
        params.setdefault("std", list(cfg.DATA.std))
    try:
        return build_attack(spec.name, model, **params)
    except (ValueError, TypeError) as exc:
        raise UserError(f"{spec.where} ({spec.key}): {exc}") from exc
