"""On a small trained model: every attack raises the loss it maximises, and PGD lowers the mIoU."""
from __future__ import annotations

import pytest
import torch

from attack import ATTACKS, build_attack
from util.evaluation.metrics import confusion_matrix, scores

COUNTS = [50, 40, 30, 20, 10, 5, 1]


def miou(model, x, y) -> float:
    with torch.no_grad():
        return scores(confusion_matrix(model(x).argmax(1), y, 7))["mIoU"]


# adv_lib's minimal-norm attacks minimise a norm under a fooled-pixel constraint rather than raise a loss: see
# tests/test_rse_attacks.py
MINIMAL_NORM = ("dag", "pdpgd", "alma-prox", "asma", "pdgd")


@pytest.mark.parametrize("name", [n for n in ATTACKS if n not in MINIMAL_NORM])
def test_attack_raises_its_loss(trained_tiny, name):
    model, x, y = trained_tiny
    params = {"fgsm": {}, "bim": {"steps": 5}, "pirat-pgd": {"steps": 5}}.get(name, {"steps": 5, "random_start": False})
    if name in ("apgd-mce-bal", "sea"):
        params["class_counts"] = COUNTS
    if name == "sea":
        params["steps"] = 9
    trace = build_attack(name, model, **params).run(x, y).trace
    runs: dict[str, list] = {}
    for r in trace:  # SEA: one APGD run per loss, each starting from the clean image
        runs.setdefault(r.extra.get("stage", "").split("@")[0], []).append(r.loss)
    for stage, losses in runs.items():
        # trace[0] is the clean image (no random start); APGD returns its lowest-accuracy point, so for it the
        # check is that the optimiser found points of higher loss; the PGD family's last iterate must be higher
        final = max(losses[1:]) if name.startswith(("apgd", "sea")) else losses[-1]
        assert final > losses[0] * 1.05, f"{name} {stage}: loss {losses[0]:.4f} -> {final:.4f}"


def test_pgd_lowers_miou(trained_tiny):
    model, x, y = trained_tiny
    clean = miou(model, x, y)
    adv = build_attack("pgd", model, eps=0.03, alpha=0.01, steps=10, seed=0)(x, y)
    assert clean > 0.5, "the tiny model did not learn; the test would mean nothing"
    assert miou(model, adv, y) < clean - 0.05


def test_targeted_pgd_moves_predictions_to_the_target(trained_tiny):
    model, x, y = trained_tiny
    atk = build_attack("pgd", model, eps=0.06, alpha=0.01, steps=10, targeted=True, target_class=3, seed=0)
    result = atk.run(x, y)
    assert result.trace[-1].pixel_acc > 2 * result.trace[0].pixel_acc      # agreement with the target map
    assert result.trace[-1].loss < result.trace[0].loss                    # CE toward the target descends
