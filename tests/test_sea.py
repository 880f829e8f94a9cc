"""SEA's stages and per-image ensemble, and the greedy dataset-level worst case (METHOD.md §5)."""
from __future__ import annotations

import itertools

import pytest
import torch
from tiny_models import TinySeg

from attack import APGD, SEA, worst_case_miou
from attack.base import Recorder, project
from attack.sea import RADII, stage_steps
from util.metrics import scores

# ---- SEA -------------------------------------------------------------------------------------------------

COUNTS = [400, 200, 100, 50, 25, 10, 5]


def test_stage_steps():
    assert stage_steps(300) == [90, 90, 120]
    for steps in range(5, 60):
        parts = stage_steps(steps)
        assert len(parts) == 3 and sum(parts) == steps and min(parts) >= 1


def test_sea_rejects_too_few_steps():
    with pytest.raises(ValueError, match="steps"):
        SEA(TinySeg(), steps=4, class_counts=COUNTS)


@pytest.fixture(scope="module")
def sea_problem():
    torch.manual_seed(0)
    model = TinySeg(classes=7, width=8).eval()
    g = torch.Generator().manual_seed(5)
    x = torch.rand(2, 3, 16, 16, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every valid pixel starts correct
    y[:, :3] = 255
    return model, x, y


def pixel_acc(model, x, y):
    with torch.no_grad():
        pred = model(x).argmax(1)
    valid = y != 255
    return ((pred == y) & valid).flatten(1).sum(1).double() / valid.flatten(1).sum(1)


def test_sea_output_within_eps_and_range(sea_problem):
    model, x, y = sea_problem
    eps = 0.03
    adv = SEA(model, eps=eps, steps=6, class_counts=COUNTS, seed=1)(x, y)
    assert adv.shape == x.shape and adv.dtype == x.dtype
    assert (adv - x).abs().max() <= eps + 1e-6
    assert adv.min() >= 0 and adv.max() <= 1
    assert (pixel_acc(model, adv, y) < 1).all()


def test_sea_keeps_per_image_the_best_of_its_apgd_runs(sea_problem):
    """Rebuild SEA's three staged APGD runs by hand; per image SEA must give the lowest pixel accuracy of them."""
    model, x, y = sea_problem
    eps, steps = 0.02, 6
    losses = ("mce", "mce-bal", "js")
    res = SEA(model, eps=eps, steps=steps, losses=losses, class_counts=COUNTS, random_start=False).run(x, y)
    finals = []
    for loss in losses:
        apgd = APGD(model, eps=eps, steps=steps, loss=loss, random_start=False,
                    class_counts=COUNTS if loss == "mce-bal" else None)
        xi = x.clone()
        for radius, n in zip(RADII, stage_steps(steps)):
            xi, _ = apgd.optimise(x, project(xi, x, radius * eps, "linf"), y, radius * eps, n, Recorder())
        finals.append(xi)
    accs = torch.stack([pixel_acc(model, xi, y) for xi in finals])  # (losses, N)
    sea_acc = pixel_acc(model, res.adv, y)
    assert (sea_acc <= accs.min(0).values + 1e-12).all()
    torch.testing.assert_close(sea_acc, accs.min(0).values, rtol=0, atol=0)
    # the runs differ, so keeping the wrong one would be seen
    assert (accs.max(0).values > accs.min(0).values).any()


def test_sea_trace_stages(sea_problem):
    """Per loss, three stages at 2, 1.5 and 1 eps, each starting from a full-size step; with one image, SEA's
    pixel accuracy is the lowest one recorded in the final (eps) stages."""
    model, x, y = sea_problem
    x, y = x[:1], y[:1]
    eps, steps = 0.02, 7
    res = SEA(model, eps=eps, steps=steps, class_counts=COUNTS, random_start=False).run(x, y)
    expected_stages = [f"{loss}@{r:g}eps" for loss in ("mce", "mce-bal", "js") for r in RADII]
    stages = list(dict.fromkeys(r.stage for r in res.trace))
    assert stages == expected_stages
    for stage, (factor, n) in zip(stages, list(zip(RADII, stage_steps(steps))) * 3):
        recs = [r for r in res.trace if r.stage == stage]
        assert len(recs) == n + 1
        assert recs[0].step_size == pytest.approx(2 * factor * eps)
    final = min(r.pixel_acc for r in res.trace if r.stage.endswith("@1eps"))
    assert pixel_acc(model, res.adv, y).item() == pytest.approx(final, abs=1e-12)
    assert (res.adv - x).abs().max() <= eps + 1e-6


# ---- worst-case mIoU over attacks ------------------------------------------------------------------------

def miou_of(cms: torch.Tensor, choice) -> float:
    """Dataset mIoU (util.metrics.scores) when image i takes attack choice[i]; cms (A,N,K,K)."""
    total = sum(cms[a, i] for i, a in enumerate(choice))
    return scores(total)["mIoU"]


def lowest_accuracy_choice(cms: torch.Tensor) -> list[int]:
    a_count, n = cms.shape[:2]
    choice = []
    for i in range(n):
        accs = []
        for a in range(a_count):
            total = int(cms[a, i].sum())
            accs.append(int(cms[a, i].trace()) / total if total else 0.0)
        choice.append(accs.index(min(accs)))
    return choice


@pytest.mark.parametrize("seed", range(8))
def test_worst_case_against_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    a_count, n, k = 3, 4, 3
    cms = torch.randint(0, 6, (a_count, n, k, k), generator=g)
    cms[:, :, 2] = torch.where(torch.rand(a_count, n, 1, generator=g) < 0.5, 0, cms[:, :, 2])  # class 2 often absent
    choice, miou = worst_case_miou(cms)
    assert len(choice) == n and all(0 <= a < a_count for a in choice)
    assert miou == pytest.approx(miou_of(cms, choice), abs=1e-12)
    start = miou_of(cms, lowest_accuracy_choice(cms))
    optimum = min(miou_of(cms, c) for c in itertools.product(range(a_count), repeat=n))
    assert optimum - 1e-12 <= miou <= start + 1e-12
    # a start from which no single switch lowers the mIoU is returned as it is
    start_choice = lowest_accuracy_choice(cms)
    if all(miou_of(cms, start_choice[:i] + [a] + start_choice[i + 1:]) >= start - 1e-12
           for i in range(n) for a in range(a_count)):
        assert choice == start_choice
    # greedy stops only where no single switch lowers the mIoU
    for i in range(n):
        for a in range(a_count):
            switched = list(choice)
            switched[i] = a
            assert miou_of(cms, switched) >= miou - 1e-12


def test_worst_case_switches_away_from_the_lowest_accuracy_attack():
    """Image 0: attack 0 has the lower pixel accuracy (0.5 < 0.67) but attack 1 erases class 1, which lowers the
    dataset mIoU from 0.533 to 0.409; image 1 is the same under both attacks."""
    img1 = torch.tensor([[10, 0], [0, 0]])
    cms = torch.stack([torch.stack([torch.tensor([[2, 6], [0, 4]]), img1]),
                       torch.stack([torch.tensor([[8, 0], [4, 0]]), img1])])
    assert lowest_accuracy_choice(cms) == [0, 0]
    assert miou_of(cms, [0, 0]) == pytest.approx((12 / 18 + 4 / 10) / 2)
    choice, miou = worst_case_miou(cms)
    assert choice == [1, 0]
    assert miou == pytest.approx((18 / 22 + 0.0) / 2)


def test_worst_case_starts_from_the_lowest_accuracy_attacks():
    """The lowest-accuracy choice [0, 0] (accuracies 1/4 < 3/9 and 4/9 < 3/6) is a local minimum, mIoU
    (3/11 + 2/10)/2; the global minimum [1, 1], (1/10 + 5/14)/2, needs two switches: greedy stays at the start."""
    cms = torch.tensor([[[[1, 0], [3, 0]], [[2, 3], [2, 2]]],
                        [[[1, 3], [3, 2]], [[0, 1], [2, 3]]]])
    assert lowest_accuracy_choice(cms) == [0, 0]
    assert miou_of(cms, [1, 1]) == pytest.approx((1 / 10 + 5 / 14) / 2)
    choice, miou = worst_case_miou(cms)
    assert choice == [0, 0]
    assert miou == pytest.approx((3 / 11 + 2 / 10) / 2)


def test_worst_case_rejects_bad_shapes():
    with pytest.raises(ValueError, match="A,N,K,K"):
        worst_case_miou(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="A,N,K,K"):
        worst_case_miou(torch.zeros(2, 3, 4, 5))
