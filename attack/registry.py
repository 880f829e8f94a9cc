"""`build_attack(name, model, **params)`: every attack by its registry name (docs/design.md, Attack).

ATTACKS maps a name to a class or a factory with the class's keyword parameters. An attack of your own is one
`register_attack("name", MyAttack)` call; configs, suites and the evaluation then take it by that name. (The attack
library imports nothing of the project, so it keeps this plain table rather than util.registry.Registry.)"""
from __future__ import annotations

import inspect
from typing import Callable

from torch import nn

from attack.apgd import APGD
from attack.base import Attack
from attack.cospgd import CosPGD
from attack.minimal_norm import ASMA, DAG, PDGD, PDPGD, ALMAProx
from attack.padam import PAdam
from attack.pgd import BIM, FGSM, PGD
from attack.pirat_pgd import PIRATPGD
from attack.rppgd import RPPGD, RPPGDPlusPlus
from attack.sea import SEA
from attack.segpgd import SegPGD


def _preset(cls: type, fixed: dict, **defaults) -> Callable[..., Attack]:
    """A factory of `cls` with the arguments `fixed` set (the registry name fixes them) and other defaults: APGD's
    loss, rse's presets."""
    def make(model: nn.Module, **params) -> Attack:
        return cls(model, **fixed, **{**defaults, **params})
    sig = inspect.signature(cls)
    make.__signature__ = sig.replace(parameters=[  # type: ignore[attr-defined]
        p.replace(default=defaults.get(p.name, p.default)) for p in sig.parameters.values() if p.name not in fixed])
    return make


def _apgd(loss: str, **defaults) -> Callable[..., Attack]:
    return _preset(APGD, {"loss": loss}, **defaults)


ATTACKS: dict[str, Callable[..., Attack]] = {
    "fgsm": FGSM,
    "bim": BIM,
    "pgd": PGD,
    "segpgd": SegPGD,
    "cospgd": CosPGD,
    "rppgd": RPPGD,
    "rppgd++": RPPGDPlusPlus,
    "apgd-ce": _apgd("ce"),
    "apgd-mce": _apgd("mce"),
    "apgd-mce-bal": _apgd("mce-bal"),
    "apgd-js": _apgd("js"),
    # the two APGD runs of the rse ensemble (Halmosi et al., ECCV 2024) that SEA lacks, with rse's tracked losses
    "apgd-segpgd": _apgd("segpgd", steps=300),
    "apgd-mask-norm-corrlog": _apgd("mask-norm-corrlog", steps=300, track_loss="mask-norm-corrlog"),
    "sea": SEA,
    "padam-ce": _preset(PAdam, {"loss": "ce"}),
    "padam-cos": _preset(PAdam, {"loss": "cos"}),
    # adv_lib's minimal-norm attacks, clamped to the eps ball (rse runs dag with gamma 0.001 and 0.003)
    "dag": DAG,
    "pdpgd": PDPGD,
    "alma-prox": ALMAProx,
    "asma": ASMA,
    "pdgd": PDGD,
    "pirat-pgd": PIRATPGD,
}


def attack_parameters(name: str) -> dict[str, object]:
    """The keyword parameters of attack `name` with their defaults."""
    if name not in ATTACKS:
        raise ValueError(f"unknown attack {name!r}; choose one of {', '.join(ATTACKS)}")
    sig = inspect.signature(ATTACKS[name])
    return {p.name: p.default for p in sig.parameters.values() if p.name != "model"}


def build_attack(name: str, model: nn.Module, **params) -> Attack:
    """Build attack `name` on `model`; unknown names or parameters raise ValueError listing the valid ones."""
    allowed = attack_parameters(name)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(f"{name} has no parameter {', '.join(unknown)}; its parameters are {', '.join(allowed)}")
    return ATTACKS[name](model, **params)


def register_attack(name: str, factory: Callable[..., Attack] | None = None):
    """Add an attack (a class, or a factory with the class's keyword parameters) under `name`; a name is registered
    once. Without `factory` it is a class decorator: @register_attack("my-attack")."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"an attack needs a non-empty name; got {name!r}")

    def add(value: Callable[..., Attack]) -> Callable[..., Attack]:
        if name in ATTACKS:
            raise ValueError(f"attack {name!r} is registered already")
        ATTACKS[name] = value
        return value
    return add if factory is None else add(factory)
