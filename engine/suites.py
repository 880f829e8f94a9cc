"""Named attack suites (ATTACK.suite, docs/evaluation.md#attack-suites), in the spirit of AutoAttack's
version='standard': a name that expands to a list of attack specs with presets at the eps ATTACK.suite_eps.

- `sea`: SEA as published (Croce et al., ECCV 2024): APGD with MCE-Bal, MCE and JS, 300 steps each, and its figure.
- `rse`: the ensemble of "Trying Harder Pays Off" (Halmosi et al., ECCV 2024) with rse's presets: PAdam-CE and
  PAdam-Cos (200 steps of 2/255 at 8/255), APGD with the masked CE, SegPGD's loss, JS and the masked normalised
  correct-logit loss (300 steps each, as SEA's code), DAG with gamma 0.001 and 0.003, PDPGD and ALMA prox (adv_lib's
  minimal-norm attacks, clamped to the eps ball).
- `strongest`: `rse` and `sea` together with RP-PGD++, SegPGD and CosPGD (100 steps, step eps/4 with the best
  iterate kept).
- `legacy`: the released test scripts' BIM-2 (eps 0.03, alpha 0.01, 2 steps), whatever ATTACK.suite_eps says.

A suite is one function of eps registered in SUITES; ATTACK.attacks entries are added after the suite's, and the
worst case runs over all of them. Step sizes are fractions of eps, so a suite keeps its ratios at any eps.
"""
from __future__ import annotations

from typing import Callable

from util.registry import Registry

SUITES: Registry[Callable[[float], list[dict]]] = Registry("suite", "ATTACK.suite")


@SUITES.register("sea")
def sea(eps: float) -> list[dict]:
    return [{"name": "sea", "eps": eps, "steps": 300}]


@SUITES.register("rse")
def rse(eps: float) -> list[dict]:
    apgd = [{"name": f"apgd-{loss}", "eps": eps, "steps": 300} for loss in ("mce", "segpgd", "js",
                                                                           "mask-norm-corrlog")]
    return [{"name": "padam-ce", "eps": eps, "alpha": eps / 4, "steps": 200},
            {"name": "padam-cos", "eps": eps, "alpha": eps / 4, "steps": 200},
            *apgd,
            {"name": "dag", "key": "dag-0.001", "eps": eps, "gamma": 0.001},
            {"name": "dag", "key": "dag-0.003", "eps": eps, "gamma": 0.003},
            {"name": "pdpgd", "eps": eps},
            {"name": "alma-prox", "eps": eps}]


@SUITES.register("strongest")
def strongest(eps: float) -> list[dict]:
    pgd_family = [{"name": name, "eps": eps, "alpha": eps / 4, "steps": 100, "best": True}
                  for name in ("rppgd++", "segpgd", "cospgd")]
    return rse(eps) + sea(eps) + pgd_family


@SUITES.register("legacy")
def legacy(eps: float) -> list[dict]:
    return [{"name": "bim", "eps": 0.03, "alpha": 0.01, "steps": 2}]


def suite_specs(name: str, eps: float) -> list[dict]:
    """The attack specs of suite `name` at `eps` ([] for the empty name)."""
    return SUITES.get(name)(eps) if name else []
