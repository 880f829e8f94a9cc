"""RP-PGD / RP-PGD++ (docs/method.md §4): regions step by step, schedules, prototype terms, and the release variant."""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from tiny_models import TinySeg
from torch import nn

from attack import RPPGD, RPPGDPlusPlus
from attack.ball import RandomSource
from attack.losses import ce_map
from attack.prototypes import class_prototypes, inter_loss, intra_loss, to_grid
from attack.regions import BOUNDARY, FALSE, IGNORED, TRUE, initial_regions, region_weights, update_regions

T_, B_, F_, I_ = TRUE, BOUNDARY, FALSE, IGNORED


class Scripted(nn.Module):
    """Predicts a given label map at each call (one map per forward pass), with logits that still depend on x."""

    def __init__(self, preds: list[torch.Tensor], classes: int) -> None:
        super().__init__()
        self.preds, self.classes, self.calls = preds, classes, 0

    def logits(self, x: torch.Tensor, call: int) -> torch.Tensor:
        pred = self.preds[min(call, len(self.preds) - 1)]
        return 5 * F.one_hot(pred, self.classes).permute(0, 3, 1, 2).float() + 0.01 * x.mean(1, keepdim=True)

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        out = self.logits(x, self.calls)
        self.calls += 1
        return {"out": out, "aux": None, "feat": F.avg_pool2d(x, 2)} if return_dict else out


LABELS = torch.tensor([[[0, 1, 2, 255], [0, 1, 2, 1]]])
PREDS = [torch.tensor([[[0, 1, 0, 0], [0, 1, 2, 1]]]),   # x_0: (0,2) wrong -> F
         torch.tensor([[[1, 1, 2, 0], [0, 1, 2, 0]]]),   # x_1: (0,0), (1,3) turn wrong -> B; (0,2) right, stays F
         torch.tensor([[[0, 1, 2, 0], [0, 0, 2, 1]]]),   # x_2: (0,0), (1,3) right again, stay B; (1,1) -> B
         torch.tensor([[[0, 1, 2, 0], [0, 1, 2, 1]]])]   # x_3: all right, nothing changes


def test_region_functions_step_by_step():
    valid = LABELS != 255
    regions = initial_regions((PREDS[0] == LABELS) & valid, valid)
    assert regions.tolist() == [[[T_, T_, F_, I_], [T_, T_, T_, T_]]]
    expected = [[[B_, T_, F_, I_], [T_, T_, T_, B_]],
                [[B_, T_, F_, I_], [T_, B_, T_, B_]],
                [[B_, T_, F_, I_], [T_, B_, T_, B_]]]
    for pred, want in zip(PREDS[1:], expected):
        regions = update_regions(regions, (pred == LABELS) & valid)
        assert regions.tolist() == [want]


@pytest.mark.parametrize("variant", ["described", "release"])
def test_attack_keeps_region_state_across_steps(variant):
    model = Scripted(PREDS, classes=3)
    atk = RPPGD(model, steps=3, random_start=False, variant=variant)
    result = atk.run(torch.full((1, 3, 2, 4), 0.5), LABELS)
    ignored = I_ if variant == "described" else F_   # the release code puts ignored pixels in F
    assert result.extras["regions"].tolist() == [[[B_, T_, F_, ignored], [T_, B_, T_, B_]]]
    assert model.calls == 4  # one forward per step plus the final iterate for the trace


def test_region_schedules():
    for t, steps in itertools.product(range(1, 6), [1, 3, 5]):
        if t > steps:
            continue
        l_t, l_b, l_f = region_weights(t, steps)
        assert (l_t, l_b, l_f) == pytest.approx((1 - t / (2 * steps), (t - 1) / (2 * steps), 1 / (2 * steps)))
        assert l_t + l_b + l_f == pytest.approx(1.0)
        i = t - 1
        assert region_weights(t, steps, zero_based=True) == pytest.approx(
            (1 - i / (2 * steps), (i - 1) / (2 * steps), 1 / (2 * steps)))
    assert region_weights(1, 3, zero_based=True)[1] < 0  # negative at i = 0, where B is empty


@pytest.mark.parametrize("variant", ["described", "release"])
def test_region_loss_and_ignore_handling(variant):
    """Step 1's objective (prototype weights 0) against a hand count; release counts the ignored pixel in F."""
    x = torch.full((1, 3, 2, 4), 0.5)
    model = Scripted(PREDS, classes=3)
    ce = ce_map(model.logits(x, 0), LABELS, 255)[0]
    atk = RPPGD(model, steps=3, random_start=False, variant=variant, w_inter=0.0)
    loss_step1 = atk.run(x, LABELS).trace[0].loss
    true_pixels = [(0, 0), (0, 1), (1, 0), (1, 1), (1, 2), (1, 3)]
    mean_t = sum(float(ce[p]) for p in true_pixels) / 6
    l_t, _, l_f = region_weights(1, 3, zero_based=variant == "release")
    f_count = 1 if variant == "described" else 2       # (0,2), plus the ignored (0,3) in the release
    assert loss_step1 == pytest.approx(0.5 * (l_t * mean_t + l_f * float(ce[0, 2]) / f_count), rel=1e-5)


def brute_prototypes(feat, labels, mask):
    """{(group, class): mean feature} by explicit loops; feat (N,C,h,w) for one group."""
    out: dict[int, list[torch.Tensor]] = {}
    n, _, h, w = feat.shape
    for i, r, c in itertools.product(range(n), range(h), range(w)):
        if mask[i, r, c]:
            out.setdefault(int(labels[i, r, c]), []).append(feat[i, :, r, c])
    return {k: torch.stack(v).mean(0) for k, v in out.items()}


def test_prototypes_match_brute_force_per_image_and_batch():
    g = torch.Generator().manual_seed(0)
    feat = torch.randn(2, 5, 3, 4, generator=g)
    labels = torch.randint(0, 4, (2, 3, 4), generator=g)
    mask = torch.rand(2, 3, 4, generator=g) > 0.3
    per_image = class_prototypes(feat, labels, mask, 4, "image")
    for i in range(2):
        ref = brute_prototypes(feat[i:i + 1], labels[i:i + 1], mask[i:i + 1])
        assert sorted(ref) == per_image.present[i].nonzero().flatten().tolist()
        for k, v in ref.items():
            assert torch.allclose(per_image.protos[i, k], v, atol=1e-6)
    batch = class_prototypes(feat, labels, mask, 4, "batch")
    for k, v in brute_prototypes(feat, labels, mask).items():
        assert torch.allclose(batch.protos[0, k], v, atol=1e-6)


def s(a, b):
    return (F.cosine_similarity(a, b, dim=0) + 1) / 2


def test_inter_and_intra_terms_and_their_release_reductions():
    g = torch.Generator().manual_seed(1)
    feat = torch.randn(1, 3, 1, 7, generator=g)
    labels = torch.tensor([[[0, 0, 1, 1, 1, 2, 2]]])
    mask = torch.ones_like(labels, dtype=torch.bool)
    p = class_prototypes(feat, labels, mask, 4, "image")   # class 3 absent
    protos = brute_prototypes(feat, labels, mask)
    pairs = [s(protos[a], protos[b]) for a, b in [(0, 1), (0, 2), (1, 2)]]
    assert float(inter_loss(p)) == pytest.approx(float(sum(pairs) / 3), rel=1e-5)
    assert float(inter_loss(p, ordered_pairs=True)) == pytest.approx(float(2 * sum(pairs) / 3), rel=1e-5)

    tau = 0.8
    l_c = {}
    for c, v in protos.items():
        sims = [float(s(feat[0, :, 0, j], v)) for j in range(7) if labels[0, 0, j] == c]
        low, high = [x for x in sims if x < tau], [x for x in sims if x >= tau]
        l_c[c] = 0.75 * (sum(low) / len(low) if low else 0) + 0.25 * (sum(high) / len(high) if high else 0)
    assert float(intra_loss(p, tau)) == pytest.approx(sum(l_c.values()) / 3, rel=1e-5)
    assert float(intra_loss(p, tau, (0,))) == pytest.approx((l_c[1] + l_c[2]) / 2, rel=1e-5)
    assert float(intra_loss(p, tau, reduction="last")) == pytest.approx(l_c[2], rel=1e-5)  # last class only
    only_background = class_prototypes(feat, torch.zeros_like(labels), mask, 4, "image")
    assert float(intra_loss(only_background, tau, reduction="last")) == 0.0                 # class 0 always skipped
    assert float(inter_loss(only_background)) == 0.0                        # fewer than two classes


def test_to_grid_is_nearest():
    labels = torch.arange(16).view(1, 4, 4)
    assert to_grid(labels, (2, 2)).tolist() == [[[0, 2], [8, 10]]]


@pytest.mark.parametrize("cls", [RPPGD, RPPGDPlusPlus])
def test_prototype_terms_carry_gradient_only_in_described_variant(trained_tiny, cls):
    model, x, y = trained_tiny
    described = cls(model, steps=2, random_start=False, w_region=0.0)
    release = cls(model, steps=2, random_start=False, w_region=0.0, variant="release")
    assert not torch.equal(described(x, y), x), "described: the prototype terms must move the image"
    result = release.run(x, y)
    assert torch.equal(result.adv, x), "release: detached features give no gradient"
    assert any(r.extra["inter"] > 0 for r in result.trace), "release still computes the prototype terms for logging"


def test_release_random_start_lies_in_normalised_unit_box():
    model = TinySeg()
    x = torch.rand(2, 3, 17, 19)
    norm = {"mean": model.normalize.mean.flatten().tolist(), "std": model.normalize.std.flatten().tolist()}
    atk = RPPGD(model, variant="release", eps=0.03, **norm)
    x0 = atk.start(x, RandomSource(x.device, seed=0))
    mean, std = model.normalize.mean, model.normalize.std
    assert (x0 >= mean - 1e-6).all() and (x0 <= mean + std + 1e-6).all()
    assert (x0 - x).abs().max() > 0.1, "the release start leaves the eps ball"
    described = RPPGD(model, eps=0.03).start(x, RandomSource(x.device, seed=0))
    assert (described - x).abs().max() <= 0.03 + 1e-6
    release = RPPGD(model, variant="release", eps=0.03, steps=1, seed=0, best=True, **norm)
    adv = release(x, torch.zeros(2, 17, 19).long())
    assert (adv - x).abs().max() <= 0.03 + 1e-6, "the first projection pulls it back (and best never returns x_0)"


def test_per_image_pooling_makes_images_independent(trained_tiny):
    model, x, y = trained_tiny
    for cls in (RPPGD, RPPGDPlusPlus):
        alone = cls(model, steps=3, random_start=False)(x[:1], y[:1])
        batched = cls(model, steps=3, random_start=False)(x, y)[:1]
        assert (alone != batched).float().mean() < 1e-3


@pytest.mark.parametrize("w_inter,w_intra", [(0.25, -0.25), (-0.25, 0.25), (-0.1, -0.4)])
def test_negative_prototype_weights_flip_their_terms(trained_tiny, w_inter, w_intra):
    """A negative w_inter or w_intra is allowed (to study the sign of a term): the objective of every iterate is
    w_region * region + w_inter * inter + w_intra * intra with the sign as given."""
    model, x, y = trained_tiny
    res = RPPGDPlusPlus(model, steps=3, random_start=False, w_inter=w_inter, w_intra=w_intra).run(x[:2], y[:2])
    for r in res.trace:
        expected = 0.5 * r.extra["region"] + w_inter * r.extra["inter"] + w_intra * r.extra["intra"]
        assert r.loss == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert any(abs(r.extra["intra"]) > 1e-4 for r in res.trace)
    with pytest.raises(ValueError, match="w_region"):
        RPPGDPlusPlus(model, w_region=-1.0)


def test_the_release_variant_steps_eps_over_steps_unless_alpha_is_given():
    model = TinySeg()
    assert RPPGDPlusPlus(model, variant="release", mean=[0.5] * 3, std=[0.5] * 3).alpha == pytest.approx(0.01)
    assert RPPGD(model, eps=0.06, steps=4, variant="release", mean=[0.5] * 3, std=[0.5] * 3).alpha == 0.015
    assert RPPGD(model, eps=0.06, steps=4, alpha=0.02, variant="release", mean=[0.5] * 3, std=[0.5] * 3).alpha == 0.02
    assert RPPGD(model, eps=0.06, steps=4).alpha == 0.01  # the described variant keeps its default
    atk = RPPGD(model, eps=0.06, steps=4, variant="release", random_start=False)
    assert atk.params()["alpha"] == 0.015  # recorded as used, so build_attack(**params()) rebuilds it
