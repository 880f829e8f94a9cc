"""SEA's stages and per-image ensemble (METHOD.md §5)."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TinySeg

from attack import APGD, SEA
from attack.base import Recorder, project
from attack.sea import RADII, stage_steps

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
    stages = list(dict.fromkeys(r.extra["stage"] for r in res.trace))
    assert stages == expected_stages
    for stage, (factor, n) in zip(stages, list(zip(RADII, stage_steps(steps))) * 3):
        recs = [r for r in res.trace if r.extra["stage"] == stage]
        assert len(recs) == n + 1
        assert recs[0].extra["step_size"] == pytest.approx(2 * factor * eps)
    final = min(r.pixel_acc for r in res.trace if r.extra["stage"].endswith("@1eps"))
    assert pixel_acc(model, res.adv, y).item() == pytest.approx(final, abs=1e-12)
    assert (res.adv - x).abs().max() <= eps + 1e-6
