"""APGD's checkpoints and step-size rule (docs/method.md §5) on models whose maximiser or loss sequence is known."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attack import APGD
from attack.apgd import apgd_checkpoints

# ---- checkpoints -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("steps,marks", [
    # windows of max(int(0.22N),1), each shorter by max(int(0.03N),1), at least max(int(0.06N),1), worked by hand
    (10, [2, 3, 4, 5, 6, 7, 8, 9, 10]),                # 2, then 1 each (ceil(p_j N) would give 3, 5, 6, ...)
    (90, [19, 36, 51, 64, 75, 84]),                    # 19, 17, 15, 13, 11, 9; 84 + 7 > 90
    (100, [22, 41, 57, 70, 80, 87, 93, 99]),           # 22, 19, 16, 13, 10, 7, 6, 6
    (120, [26, 49, 69, 86, 100, 111, 119]),            # 26, 23, 20, 17, 14, 11, 8
    (300, [66, 123, 171, 210, 240, 261, 279, 297]),    # 66, 57, 48, 39, 30, 21, 18, 18
])
def test_checkpoint_windows(steps, marks):
    assert apgd_checkpoints(steps) == marks


def reference_counter(steps: int) -> list[int]:
    """The reference's own loop: a counter reaching the window length k triggers the check, then k shrinks."""
    k, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks, counter = [], 0
    for i in range(steps):
        counter += 1
        if counter == k:
            marks.append(i + 1)
            counter, k = 0, max(k - shrink, shortest)
    return marks


@pytest.mark.parametrize("steps", list(range(1, 41)) + [50, 99, 101, 300, 1000])
def test_checkpoints_for_any_step_count(steps):
    marks = apgd_checkpoints(steps)
    assert marks == reference_counter(steps)
    assert marks and all(1 <= m <= steps for m in marks) and marks == sorted(set(marks))


# ---- a model whose maximiser is known --------------------------------------------------------------------

class Bowl(nn.Module):
    """Two classes; logit_0 - logit_1 = scale * ||x_p - c_p||^2 - bias at each pixel p.

    CE for label 0 is softplus(bias - scale * ||x_p - c_p||^2): maximal, softplus(bias), exactly at x = c, and
    a pixel is misclassified only within ||x_p - c_p||^2 < bias / scale of c."""

    def __init__(self, c: torch.Tensor, scale: float = 100.0, bias: float = 0.01) -> None:
        super().__init__()
        self.register_buffer("c", c)
        self.scale, self.bias = scale, bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d2 = ((x - self.c) ** 2).sum(1)
        return torch.stack([self.scale * d2, torch.full_like(d2, self.bias)], 1)


def bowl_problem(n: int, seed: int, eps: float = 0.1):
    g = torch.Generator().manual_seed(seed)
    x = 0.2 + 0.6 * torch.rand(n, 3, 3, 3, generator=g)
    c = x + eps * (1.2 * torch.rand(n, 3, 3, 3, generator=g) - 0.6)  # strictly inside the eps ball
    return Bowl(c), x, torch.zeros(n, 3, 3, dtype=torch.long)


@pytest.mark.parametrize("seed", [0, 1])
def test_apgd_reaches_the_known_maximiser(seed):
    eps = 0.1
    model, x, y = bowl_problem(2, seed, eps)
    atk = APGD(model, eps=eps, steps=100, loss="ce", random_start=False)
    res = atk.run(x, y)
    best = F.softplus(torch.tensor(model.bias)).item()
    losses = [r.loss for r in res.trace]
    assert len(res.trace) == 101 and [r.step for r in res.trace] == list(range(101))
    assert max(losses) <= best + 1e-6
    assert losses[-1] == pytest.approx(best, abs=1e-4)
    assert losses[0] < best - 0.1  # the start is far from the maximum
    # the returned image is the lowest-accuracy iterate: here one where every pixel is within the small
    # misclassified bowl around c, so close to the maximiser
    adv = res.adv
    assert (adv - x).abs().max() <= eps + 1e-6
    assert (model(adv).argmax(1) == 1).all()
    assert (adv - model.c).abs().max() < 0.01
    assert min(r.pixel_acc for r in res.trace) == 0


def test_apgd_step_size_halves_only_after_checkpoints():
    eps = 0.1
    model, x, y = bowl_problem(1, 3, eps)
    res = APGD(model, eps=eps, steps=100, loss="ce", random_start=False).run(x, y)
    sizes = [r.extra["step_size"] for r in res.trace]
    marks = set(apgd_checkpoints(100))
    assert sizes[0] == pytest.approx(2 * eps)
    changes = [j for j in range(100) if sizes[j + 1] != sizes[j]]
    assert changes, "the iterate oscillates around c, so the step must be halved"
    for j in changes:
        assert j in marks, f"step size changed after iteration {j}, not a checkpoint"
        assert sizes[j + 1] * 2 == sizes[j], f"not an exact halving after iteration {j}"
    assert sizes[-1] < sizes[0] / 8  # halved several times while converging


def reference_apgd(model: nn.Module, x_nat: torch.Tensor, eps: float, steps: int):
    """APGD for one image written out from docs/method.md §5 and the SEA authors' apgd_train, CE for label 0 at every
    pixel (attack and tracked loss alike). Returns the loss and step size of every iterate."""
    marks = set(reference_counter(steps))

    def loss_grad(x):
        x = x.clone().requires_grad_(True)
        loss = F.cross_entropy(model(x), torch.zeros(x.shape[0], *x.shape[2:], dtype=torch.long))
        (g,) = torch.autograd.grad(loss, x)
        return loss.item(), g

    def proj(v):
        return torch.min(torch.max(v, x_nat - eps), x_nat + eps).clamp(0, 1)

    eta = 2 * eps
    x = x_nat.clone()
    loss, g = loss_grad(x)
    losses, etas = [loss], [eta]
    best, x_best, g_best = loss, x, g
    # the loss history starts at 0; a reset keeps x_prev (the momentum)
    x_prev, loss_prev, rises, last, reduced_last, best_last = x, 0.0, 0, 0, True, best
    for k in range(steps):
        z = proj(x + eta * g.sign())
        x_new = z if k == 0 else proj(x + 0.75 * (z - x) + 0.25 * (x - x_prev))
        x_prev, x = x, x_new
        loss, g = loss_grad(x)
        losses.append(loss)
        etas.append(eta)
        rises += loss > loss_prev
        loss_prev = loss
        if loss > best:
            best, x_best, g_best = loss, x, g
        if k + 1 in marks:
            reduce = rises <= 0.75 * (k + 1 - last) or (not reduced_last and best <= best_last)
            if reduce:
                eta, x, g = eta / 2, x_best, g_best
            reduced_last, best_last, rises, last = reduce, best, 0, k + 1
    return losses, etas


@pytest.mark.parametrize("seed,steps", [(4, 30), (5, 100)])
def test_apgd_matches_a_reference_loop(seed, steps):
    """Momentum, projection, checkpoints, halving and the reset to the best point, iterate by iterate (float64)."""
    eps = 0.1
    model, x, y = bowl_problem(1, seed, eps)
    model = model.double()
    x = x.double()
    res = APGD(model, eps=eps, steps=steps, loss="ce", random_start=False).run(x, y)
    losses, etas = reference_apgd(model, x, eps, steps)
    assert [r.loss for r in res.trace] == pytest.approx(losses, rel=1e-6)  # the trace stores float32 losses
    assert [r.extra["step_size"] for r in res.trace] == pytest.approx(etas, rel=1e-12)
    assert len(set(etas)) > 2


# ---- the step-size rule, driven by a scripted loss sequence ----------------------------------------------

class Scripted(nn.Module):
    """Per image, the loss at the k-th forward is softplus(script[i, k] + 1e-3 * sum_c x_c): the script sets the
    loss sequence APGD sees (the x term only gives a gradient, sign +1 everywhere). Records every input."""

    def __init__(self, script: torch.Tensor) -> None:
        super().__init__()
        self.script, self.calls, self.inputs = script, 0, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.inputs.append(x.detach().clone())
        a = self.script[:, self.calls].to(x.dtype).view(-1, 1, 1)
        self.calls += 1
        d = a + 1e-3 * x.sum(1)
        return torch.stack([torch.zeros_like(d), d], 1)  # CE(label 0) = softplus(d)


EPS = 0.05


def run_script(rows: list[list[float]], steps: int = 100):
    script = torch.tensor(rows, dtype=torch.float64)
    assert script.shape[1] == steps + 1
    model = Scripted(script)
    n = script.shape[0]
    x = torch.full((n, 3, 2, 2), 0.5)
    res = APGD(model, eps=EPS, steps=steps, loss="ce", random_start=False).run(x, torch.zeros(n, 2, 2).long())
    assert model.calls == steps + 1
    return [r.extra["step_size"] for r in res.trace], model.inputs


def halvings(sizes: list[float]) -> list[int]:
    """Iterations after which the (single image's) step size was halved."""
    out = []
    for j in range(len(sizes) - 1):
        if sizes[j + 1] != sizes[j]:
            assert sizes[j + 1] == pytest.approx(sizes[j] / 2, rel=1e-6)
            out.append(j)
    return out


def window(values: list[float], start: float, rises: int, length: int, step: float = 0.1) -> list[float]:
    """`values` plus `length` loss values after `start`: `rises` increases of `step`, then decreases of step/10."""
    out, v = [], start
    for i in range(length):
        v = v + step if i < rises else v - step / 10
        out.append(v)
    return values + out


def test_loss_rising_at_every_step_keeps_the_step_size():
    sizes, inputs = run_script([[0.1 * k for k in range(101)]])
    assert halvings(sizes) == []
    assert sizes == pytest.approx([2 * EPS] * 101)
    # the first update is a plain signed step of 2 eps (no momentum), projected to the corner of the ball
    assert torch.allclose(inputs[1], torch.tensor(0.5 + EPS))
    assert torch.allclose(inputs[-1], torch.tensor(0.5 + EPS))  # and kept there


def test_loss_falling_at_every_step_halves_at_every_checkpoint_and_resets_to_the_best_point():
    sizes, inputs = run_script([[-0.1 * k for k in range(101)]])
    assert halvings(sizes) == apgd_checkpoints(100)
    # the best loss is at the start x_0 = 0.5: after the halving at 22 the iterate is reset to x_0 but the momentum
    # is kept (x_prev is still x_21, the corner 0.5 + 2 eps clipped to 0.5 + eps): z = P(x_0 + eps) = 0.5 + eps and
    # x_23 = x_0 + 0.75 (z - x_0) + 0.25 (x_0 - x_21) = 0.5 + 0.75 eps - 0.25 eps (zeroed momentum: 0.5 + 0.75 eps)
    assert torch.allclose(inputs[22], torch.tensor(0.5 + EPS))
    assert torch.allclose(inputs[23], torch.tensor(0.5 + 0.5 * EPS))


@pytest.mark.parametrize("rises,halved", [(22, False), (17, False), (16, True), (0, True)])
def test_first_checkpoint_needs_75_percent_rising_steps(rises, halved):
    """22 steps before the first checkpoint: 17 rises (77%) keep the step, 16 (73%) halve it."""
    values = window([0.0], 0.0, rises, 22, step=0.1)
    values += [values[-1] + 0.1 * (k + 1) for k in range(100 - 22)]  # rising afterwards: no later halving
    sizes, _ = run_script([values])
    assert halvings(sizes) == ([22] if halved else [])


@pytest.mark.parametrize("rises,halved", [(13, False), (12, True), (11, True)])
def test_exactly_75_percent_rising_halves(rises, halved):
    """Second window, 41 -> 57, has 16 steps: 12 rises are exactly 75%, and 'at most 75%' halves (docs/method.md §5)."""
    values = [0.1 * k for k in range(42)]  # never halved at 22 or 41
    values = window(values, values[-1], rises, 16, step=0.1)
    values += [values[-1] + 0.1 * (k + 1) for k in range(100 - 57)]
    sizes, _ = run_script([values])
    assert halvings(sizes) == ([57] if halved else [])


def test_no_improvement_of_the_best_loss_halves_even_when_the_loss_rises():
    """Window 22 -> 41: a deep drop, then 18 rises that stay below the best loss -> halved at 41 (stalled)."""
    values = [0.1 * k for k in range(23)]
    best = values[-1]
    values += [best - 5 + 0.1 * (k + 1) for k in range(41 - 22)]
    assert max(values[23:]) < best
    values += [values[-1] + 10 + 0.1 * k for k in range(100 - 41)]  # then new records: no more halving
    sizes, _ = run_script([values])
    assert halvings(sizes) == [41]


def test_stall_is_not_tested_at_the_first_checkpoint():
    """The same pattern before the first checkpoint (rises, but below the start's loss) keeps the step."""
    values = [0.0] + [-5 + 0.1 * (k + 1) for k in range(22)]
    assert max(values[1:]) < values[0]
    values += [values[-1] + 10 + 0.1 * k for k in range(100 - 22)]
    sizes, _ = run_script([values])
    assert halvings(sizes) == []


def test_no_stall_right_after_a_halving():
    """Halved at 22; window 22 -> 41 rises but never beats the best: the step size changed, so not stalled."""
    values = [0.0] + [-0.1 * (k + 1) for k in range(22)]  # falls: halved at 22
    values += [values[-1] + 0.01 * (k + 1) for k in range(41 - 22)]  # rises, stays below 0.0
    assert max(values[1:]) < values[0]
    values += [values[-1] + 10 + 0.1 * k for k in range(100 - 41)]
    sizes, _ = run_script([values])
    assert halvings(sizes) == [22]


def test_step_size_is_per_image():
    """Image 0's loss always rises, image 1's always falls: only image 1's step is halved."""
    sizes, inputs = run_script([[0.1 * k for k in range(101)], [-0.1 * k for k in range(101)]])
    marks = apgd_checkpoints(100)
    for j, s in enumerate(sizes):
        halved = sum(m < j for m in marks)
        assert s == pytest.approx((2 * EPS + 2 * EPS / 2 ** halved) / 2, rel=1e-6)
    assert torch.allclose(inputs[23][0], torch.tensor(0.5 + EPS))
    assert torch.allclose(inputs[23][1], torch.tensor(0.5 + 0.5 * EPS))


@pytest.mark.parametrize("rises,halved", [(16, False), (15, True)])
def test_first_window_counts_its_first_step_against_zero(rises, halved):
    """The reference's loss history starts at 0, so the first step is a rise even below the start's loss: a first
    step down from 5 to 1, then `rises` rises and falls to step 22, makes 1 + 16 = 17 rises of 22 (> 75%, kept)
    or 1 + 15 = 16 (<= 75%, halved); later steps set new records, so nothing else halves."""
    values = window([5.0, 1.0], 1.0, rises, 21, step=0.1)
    values += [values[-1] + 1.0 * (k + 1) for k in range(100 - 22)]
    sizes, _ = run_script([values])
    assert halvings(sizes) == ([22] if halved else [])


# ---- ties, ignored pixels and the tracked loss --------------------------------------------------------------

@pytest.mark.parametrize("ignored", [False, True])
def test_lowest_accuracy_ties_go_to_the_later_iterate(ignored):
    """Every iterate misclassifies every valid pixel (accuracy 0 throughout): the last iterate is returned, not x_0.
    Ignored pixels count at no iterate (the reference counts them wrong at x_0 and right later, so it keeps x_0)."""
    steps = 10
    model = Scripted(torch.tensor([[1.0 + 0.1 * k for k in range(steps + 1)]], dtype=torch.float64))
    x = torch.full((1, 3, 2, 2), 0.5)
    y = torch.zeros(1, 2, 2, dtype=torch.long)
    if ignored:
        y[0, 0, 0] = 255
    adv = APGD(model, eps=EPS, steps=steps, loss="ce", random_start=False)(x, y)
    assert torch.equal(adv, model.inputs[-1]) and not torch.equal(adv, x)


class PixelScripted(nn.Module):
    """One image of 1x2 pixels; at the k-th forward pixel p has d_p = script[k, p] + 1e-3 * sum_c x_c (logits 0 and
    d_p, label 0): CE_p = softplus(d_p), and the pixel is misclassified when d_p > 0."""

    def __init__(self, script: list[list[float]]) -> None:
        super().__init__()
        self.script, self.calls = torch.tensor(script, dtype=torch.float64), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.script[self.calls].to(x.dtype).view(1, 1, 2) + 1e-3 * x.sum(1)
        self.calls += 1
        return torch.stack([torch.zeros_like(d), d], 1)


STEPS = 100
# A: pixel a turns wrong at step 2 and its CE keeps growing, pixel b stays right with a slowly falling CE: CE rises at
# every step while MCE (b alone after step 1) falls. B: pixel a stays wrong with a falling CE, pixel b stays right
# with a slowly rising CE: CE falls at every step while MCE (b alone) rises.
CASES = {"A": [[-1 + 0.5 * k, -2 - 0.01 * k] for k in range(STEPS + 1)],
         "B": [[60 - 0.5 * k, -3 + 0.01 * k] for k in range(STEPS + 1)]}


@pytest.mark.parametrize("case,track,halved", [("A", "ce", False), ("A", "mce", True),
                                               ("B", "ce", True), ("B", "mce", False)])
def test_the_tracked_loss_decides_halving(case, track, halved):
    """APGD-MCE: the gradient comes from MCE, but halving follows the tracked loss. In B the attack's own loss
    rises at every step, yet tracking CE (the default, as SEA) halves at every checkpoint."""
    model = PixelScripted(CASES[case])
    atk = APGD(model, eps=EPS, steps=STEPS, loss="mce", track_loss=track, random_start=False)
    res = atk.run(torch.full((1, 3, 1, 2), 0.5), torch.zeros(1, 1, 2, dtype=torch.long))
    sizes = [r.extra["step_size"] for r in res.trace]
    assert halvings(sizes) == (apgd_checkpoints(STEPS) if halved else [])
    losses = [r.loss for r in res.trace]
    assert all(b > a for a, b in zip(losses[2:], losses[3:])) == (case == "B")  # MCE rises in B, falls in A


def test_default_track_loss_is_ce():
    atk = APGD(Scripted(torch.zeros(1, 2)), loss="mce")
    assert atk.track_loss == "ce" and atk.params()["track_loss"] == "ce"
    with pytest.raises(ValueError, match="track_loss"):
        APGD(Scripted(torch.zeros(1, 2)), track_loss="dlr")
    with pytest.raises(ValueError, match="mce-bal"):
        APGD(Scripted(torch.zeros(1, 2)), loss="ce", track_loss="mce-bal")  # needs class counts
