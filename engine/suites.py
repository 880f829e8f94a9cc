"""Named attack suites (`ATTACK.suite`), in the spirit of AutoAttack's `version='standard'`: a name that expands to
a list of attack specs with their presets (docs/attacks.md, Suites). ATTACK.attacks adds to the suite.

- `sea`: SEA as published (300 steps per loss at eps 8/255).
- `rse`: the ensemble of Halmosi, Mohos and Jelasity (ECCV 2024) with the rse package's presets at eps 8/255.
- `strongest`: `rse` and `sea` together with RP-PGD++, SegPGD and CosPGD (100 steps of 2/255, lowest-accuracy iterate).
- `legacy`: the released scripts' BIM-2 (eps 0.03, alpha 0.01, 2 steps).
"""
from __future__ import annotations

from util.errors import UserError

EPS = 8 / 255

SEA = [{"name": "sea", "eps": EPS, "steps": 300}]

RSE = [
    {"name": "padam-ce", "eps": EPS, "alpha": 2 / 255, "steps": 200},
    {"name": "padam-cos", "eps": EPS, "alpha": 2 / 255, "steps": 200},
    {"name": "apgd-mce", "eps": EPS, "steps": 300},  # rse's mask-ce-avg, tracked by CE
    {"name": "apgd-segpgd", "eps": EPS, "steps": 300},
    {"name": "apgd-js", "eps": EPS, "steps": 300},
    {"name": "apgd-mask-norm-corrlog", "eps": EPS, "steps": 300},
    {"name": "dag", "key": "dag-001", "eps": EPS, "gamma": 0.001, "steps": 200},
    {"name": "dag", "key": "dag-003", "eps": EPS, "gamma": 0.003, "steps": 200},
    {"name": "pdpgd", "eps": EPS, "primal_lr": 0.01, "steps": 500},
    {"name": "alma-prox", "eps": EPS, "lr_init": 1e-4, "steps": 500},
]

PGD_FAMILY = [{"name": name, "eps": EPS, "alpha": 2 / 255, "steps": 100, "best": True}
              for name in ("rppgd++", "segpgd", "cospgd")]

SUITES: dict[str, list[dict]] = {
    "sea": SEA,
    "rse": RSE,
    "strongest": RSE + SEA + PGD_FAMILY,
    "legacy": [{"name": "bim", "eps": 0.03, "alpha": 0.01, "steps": 2}],
}


def suite_specs(name: str, where: str = "ATTACK.suite") -> list[dict]:
    """The attack specs (fresh dicts) of suite `name`; "" is no suite. An unknown name is a UserError naming `where`."""
    if name == "":
        return []
    if name not in SUITES:
        raise UserError(f"{where}: unknown suite {name!r}; choose one of {', '.join(SUITES)} (or '' for none)")
    return [dict(spec) for spec in SUITES[name]]
