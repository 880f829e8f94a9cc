"""Known-answer tests (in the spirit of adv_lib): on a per-pixel linear segmenter the L-inf maximiser is exact.

The model has 2 classes with logits z_0 = 0 and z_1 = s_p = w . x_p + b at each pixel p. With label 0 the
per-pixel CE is log(1 + e^{s_p}), strictly increasing in s_p; with label 1 it is log(1 + e^{-s_p}), strictly
decreasing. Pixels are independent and w has no zero entry, so over the box |x' - x| <= eps, 0 <= x' <= 1 the
CE is maximised exactly at the corner clip01(x + eps * sign(w)) (label 0) or clip01(x - eps * sign(w)) (label 1).

Each attack below ascends sign(grad). Its gradient at pixel p is (positive weight) * (dCE/ds_p) * w, so its sign
is +-sign(w) wherever the weight is > 0, and 0 where the weight is 0:
- PGD: weight 1 everywhere.
- SegPGD: 1 - lambda_t on correct pixels, lambda_t on wrong ones, lambda_t = (t-1)/(2T): wrong pixels stand
  still at step 1 only.
- CosPGD: the detached cosine q_y / ||q|| > 0 (softmax probabilities are never 0 here).
- RP-PGD(++) with the region term only (w_inter = w_intra = 0): weights 1 - t/(2T) on TRUE, 1/(2T) on FALSE,
  (t-1)/(2T) on BOUNDARY, which is empty at t = 1: every non-empty region has weight > 0.
A random start lies within eps of x, so the corner is at most 2 * eps = 10 steps of alpha away (11 for SegPGD);
with 20 steps every coordinate overshoots and the projection lands exactly on the corner and stays there.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from attack import build_attack

EPS, ALPHA, STEPS = 0.05, 0.01, 20
W = torch.tensor([0.9, -1.3, 0.6])
B = 0.05


class LinearPixels(nn.Module):
    """Two classes: z_0 = 0 and z_1 = w . x_p + b at every pixel; its features are the image itself."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("w", W.clone())

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        z1 = torch.einsum("c,nchw->nhw", self.w, x) + B
        logits = torch.stack([torch.zeros_like(z1), z1], dim=1)
        return {"out": logits, "aux": None, "feat": x} if return_dict else logits


def images() -> torch.Tensor:
    """2 images of 9x11 from U(0.1, 0.9), with a few pixels at 0 and 1 so that clip01 matters too."""
    x = 0.1 + 0.8 * torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(1))
    x[0, :, 0, :3] = 0.0
    x[1, :, 4, 5:8] = 1.0
    x[0, 1, 8, 10] = 1.0
    x[1, 0, 2, 2] = 0.0
    return x


def corner(x: torch.Tensor, direction: float) -> torch.Tensor:
    return (x + direction * EPS * W.sign().view(1, 3, 1, 1)).clamp(0.0, 1.0)


ATTACKS = [
    ("pgd", {}),
    ("segpgd", {}),
    ("cospgd", {}),
    ("rppgd", {"w_region": 1.0, "w_inter": 0.0}),
    ("rppgd++", {"w_region": 1.0, "w_inter": 0.0, "w_intra": 0.0}),
]


@pytest.mark.parametrize("label, direction", [(0, 1.0), (1, -1.0)])
@pytest.mark.parametrize("name, extra", ATTACKS, ids=[a[0] for a in ATTACKS])
def test_attack_reaches_the_known_maximiser(name, extra, label, direction):
    model, x = LinearPixels(), images()
    labels = torch.full((2, 9, 11), label, dtype=torch.long)
    wrong = (model(x).argmax(1) != labels).float().mean()
    assert 0 < wrong < 1  # both correct and wrong pixels at the start: SegPGD's and RP-PGD's weights all matter
    atk = build_attack(name, model, eps=EPS, alpha=ALPHA, steps=STEPS, random_start=True, seed=0, **extra)
    torch.testing.assert_close(atk(x, labels), corner(x, direction), atol=1e-6, rtol=0)


def test_too_few_steps_miss_the_maximiser():
    """The negative check: one step of alpha from x covers only alpha of the eps to the corner."""
    model, x = LinearPixels(), images()
    labels = torch.zeros(2, 9, 11, dtype=torch.long)
    atk = build_attack("pgd", model, eps=EPS, alpha=ALPHA, steps=1, random_start=False)
    gap = (atk(x, labels) - corner(x, 1.0)).abs().max()
    assert gap > EPS - ALPHA - 1e-6
