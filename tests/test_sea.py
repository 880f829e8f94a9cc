"""SEA's stages and per-image ensemble (docs/method.md §5)."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TinySeg

from attack import APGD, SEA
from attack.ball import project
from attack.base import Recorder
from attack.sea import RADII, stage_steps

# ---- SEA -------------------------------------------------------------------------------------------------

COUNTS = [400, 200, 100, 50, 25, 10, 5]


@pytest.mark.parametrize("steps,parts", [(4, [1, 1, 2]), (5, [1, 1, 3]), (10, [3, 3, 4]), (25, [7, 7, 11]),
                                         (30, [9, 9, 12]), (90, [27, 27, 36]), (300, [90, 90, 120])])
def test_stage_steps(steps, parts):
    """int(0.3 N), int(0.3 N) and the rest, as apgd_largereps (rounding would give 2, 2, 1 at N = 5, 8 at N = 25)."""
    assert stage_steps(steps) == parts


def test_sea_rejects_too_few_steps():
    with pytest.raises(ValueError, match="steps"):
        SEA(TinySeg(), steps=3, class_counts=COUNTS)
    with pytest.raises(ValueError, match="repeat"):
        SEA(TinySeg(), steps=10, losses=("mce", "mce"))


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
    """Rebuild SEA's three staged APGD runs by hand; every run's result is in extras["runs"] and per image SEA gives
    the lowest pixel accuracy of them."""
    model, x, y = sea_problem
    eps, steps = 0.02, 6
    losses = ("mce-bal", "mce", "js")
    res = SEA(model, eps=eps, steps=steps, class_counts=COUNTS, random_start=False).run(x, y)
    assert list(res.extras["runs"]) == list(losses)
    finals = []
    for loss in losses:
        apgd = APGD(model, eps=eps, steps=steps, loss=loss, random_start=False,
                    class_counts=COUNTS if loss == "mce-bal" else None)
        xi = x.clone()
        for radius, n in zip(RADII, stage_steps(steps)):
            xi, _ = apgd.optimise(x, project(xi, x, radius * eps, "linf"), y, radius * eps, n, Recorder(images=len(x)))
        finals.append(xi)
        torch.testing.assert_close(res.extras["runs"][loss], xi, rtol=0, atol=0)
    accs = torch.stack([pixel_acc(model, xi, y) for xi in finals])  # (losses, N)
    sea_acc = pixel_acc(model, res.adv, y)
    torch.testing.assert_close(sea_acc, accs.min(0).values, rtol=0, atol=0)
    # the runs differ, so keeping the wrong one would be seen
    assert (accs.max(0).values > accs.min(0).values).any()


def test_sea_trace_stages(sea_problem):
    """Per loss, three stages at 2, 1.5 and 1 eps of int(0.3N), int(0.3N) and the rest, each starting from a
    full-size step; with one image, SEA's pixel accuracy is the lowest one recorded in the final (eps) stages."""
    model, x, y = sea_problem
    x, y = x[:1], y[:1]
    eps, steps = 0.02, 7
    res = SEA(model, eps=eps, steps=steps, class_counts=COUNTS, random_start=False).run(x, y)
    expected_stages = [f"{loss}@{r:g}eps" for loss in ("mce-bal", "mce", "js") for r in RADII]
    stages = list(dict.fromkeys(r.extra["stage"] for r in res.trace))
    assert stages == expected_stages
    for stage, (factor, n) in zip(stages, list(zip(RADII, [2, 2, 3])) * 3):
        recs = [r for r in res.trace if r.extra["stage"] == stage]
        assert len(recs) == n + 1
        assert recs[0].extra["step_size"] == pytest.approx(2 * factor * eps)
    final = min(r.pixel_acc for r in res.trace if r.extra["stage"].endswith("@1eps"))
    assert pixel_acc(model, res.adv, y).item() == pytest.approx(final, abs=1e-12)
    assert (res.adv - x).abs().max() <= eps + 1e-6


class Inputs(torch.nn.Module):
    """Records every input of a model."""

    def __init__(self, model):
        super().__init__()
        self.model, self.inputs = model, []

    def forward(self, x):
        self.inputs.append(x.detach().clone())
        return self.model(x)


def test_every_loss_starts_from_its_own_random_point(sea_problem):
    """With seed s, loss j's first iterate is the j-th uniform draw of one generator seeded with s, in the 2eps ball;
    with per-image seeds, image i's draws come from its own generator."""
    model, x, y = sea_problem
    eps, steps = 0.02, 4  # stages of 1, 1 and 2 steps: 2 + 2 + 3 forwards per loss
    spy = Inputs(model)
    SEA(spy, eps=eps, steps=steps, class_counts=COUNTS, seed=7)(x, y)
    starts = [spy.inputs[j * 7] for j in range(3)]
    g = torch.Generator().manual_seed(7)
    for start in starts:
        expected = (x + (2 * torch.rand(x.shape, generator=g) - 1) * 2 * eps).clamp(0, 1)
        torch.testing.assert_close(start, expected, rtol=0, atol=0)
    assert not torch.equal(starts[0], starts[1]) and not torch.equal(starts[1], starts[2])
    spy.inputs.clear()
    SEA(spy, eps=eps, steps=steps, class_counts=COUNTS)(x, y, seeds=[3, 4])
    for i, seed in enumerate([3, 4]):
        g = torch.Generator().manual_seed(seed)
        for j in range(3):
            expected = (x[i:i + 1] + (2 * torch.rand((1, *x.shape[1:]), generator=g) - 1) * 2 * eps).clamp(0, 1)
            torch.testing.assert_close(spy.inputs[j * 7][i:i + 1], expected, rtol=0, atol=0)


def test_later_stages_start_from_the_projected_previous_result(sea_problem):
    """Stage 2 starts from stage 1's lowest-accuracy iterate projected onto the 1.5eps ball."""
    model, x, y = sea_problem
    eps, steps = 0.02, 10  # stages of 3, 3 and 4 steps
    spy = Inputs(model)
    SEA(spy, eps=eps, steps=steps, losses=("js",), seed=0)(x, y)
    stage1 = spy.inputs[:4]
    accs = torch.stack([pixel_acc(model, z, y) for z in stage1])  # (4, N)
    best = []
    for i in range(x.shape[0]):  # the lowest accuracy, ties to the later iterate
        k = max(j for j in range(4) if accs[j, i] == accs[:, i].min())
        best.append(stage1[k][i])
    torch.testing.assert_close(spy.inputs[4], project(torch.stack(best), x, 1.5 * eps, "linf"), rtol=0, atol=0)
