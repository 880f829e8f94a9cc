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


# losses whose pixel weights follow the current prediction (masked CE counts the still-correct pixels only, SegPGD
# shifts its weight from them to the fooled ones over the steps, CosPGD weighs a pixel by its softmax's cosine to the
# label): their values at two iterates weigh different pixel sets, so for them what must go up is the fraction of
# fooled pixels
PREDICTION_WEIGHTED = ("segpgd", "cospgd", "apgd-mce", "apgd-mce-bal", "apgd-segpgd", "sea")


def assert_the_attack_raises_its_loss(model, x, y, name: str, steps: int = 5, **extra) -> None:
    """The loss the attack maximises (its trace) rises by 5% from the clean image: for the PGD family at the last
    iterate, for APGD and SEA (which return their lowest-accuracy point) at the highest point they reached, per SEA
    loss run. For a prediction-weighted loss the pixel accuracy falls by a percentage point instead."""
    params = {"fgsm": {}, "bim": {"steps": steps}, "pirat-pgd": {"steps": steps}}.get(
        name, {"steps": steps, "random_start": False})
    if name in ("apgd-mce-bal", "sea"):
        params["class_counts"] = COUNTS  # the 7 classes of the tiny data
    if name == "sea":
        params["steps"] = 9
    trace = build_attack(name, model, **params, **extra).run(x, y).trace
    runs: dict[str, list] = {}
    for r in trace:  # SEA: one APGD run per loss, each starting from the clean image
        runs.setdefault(r.extra.get("stage", "").split("@")[0], []).append(r)
    for stage, records in runs.items():
        # records[0] is the clean image (no random start)
        if name in PREDICTION_WEIGHTED:
            acc = [r.pixel_acc for r in records]
            assert min(acc[1:]) < acc[0] - 0.01, f"{name} {stage}: pixel accuracy {acc[0]:.4f} -> {min(acc[1:]):.4f}"
            continue
        losses = [r.loss for r in records]
        final = max(losses[1:]) if name.startswith(("apgd", "sea")) else losses[-1]
        assert final > losses[0] * 1.05, f"{name} {stage}: loss {losses[0]:.4f} -> {final:.4f}"


@pytest.mark.parametrize("name", [n for n in ATTACKS if n not in MINIMAL_NORM])
def test_attack_raises_its_loss(trained_tiny, name):
    model, x, y = trained_tiny
    assert_the_attack_raises_its_loss(model, x, y, name)


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
