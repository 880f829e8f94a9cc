"""attack/losses.py against per-pixel brute force (docs/method.md §2, §3, §5) and against the `cospgd` package."""
from __future__ import annotations

import math

import pytest
import torch
from cospgd import Attack as CosAttack
from torch import nn

from attack.losses import (
    ce_map,
    class_weights_from_counts,
    cospgd_map,
    js_map,
    masked_mean,
    mce_bal_map,
    mce_map,
    segpgd_map,
    segpgd_weights,
)
from attack.segpgd import SegPGD

IGNORE = 255
K = 4


def make_batch(seed: int, n: int = 2, h: int = 5, w: int = 6, ignore: bool = True, dtype=torch.float64):
    """Random logits (N,K,H,W) and labels with about half of the pixels correct and some ignored."""
    g = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(n, K, h, w, generator=g)).to(dtype)
    labels = torch.randint(0, K, (n, h, w), generator=g)
    agree = torch.rand(n, h, w, generator=g) < 0.4
    labels = torch.where(agree, logits.argmax(1), labels)
    if ignore:
        labels[torch.rand(n, h, w, generator=g) < 0.2] = IGNORE
        labels[0, 0, 0] = IGNORE
        labels[-1, -1, -1] = IGNORE
    return logits, labels


def pixels(logits, labels):
    """Yield (n, i, j, logit list, label) for every pixel."""
    n, _, h, w = logits.shape
    for b in range(n):
        for i in range(h):
            for j in range(w):
                yield b, i, j, logits[b, :, i, j].tolist(), int(labels[b, i, j])


def softmax(z):
    m = max(z)
    e = [math.exp(v - m) for v in z]
    return [v / sum(e) for v in e]


def ce(z, y):
    return -math.log(softmax(z)[y])


def argmax(z):
    return max(range(len(z)), key=lambda k: (z[k], -k))


def cos_onehot(q, y):
    return q[y] / math.sqrt(sum(v * v for v in q))


def brute(fn, logits, labels):
    """Map (N,H,W) of fn(z, y) at valid pixels, 0 at ignored ones."""
    out = torch.zeros(labels.shape, dtype=torch.float64)
    for b, i, j, z, y in pixels(logits, labels):
        if y != IGNORE:
            out[b, i, j] = fn(z, y)
    return out


def close(actual, expected, tol=1e-9):
    torch.testing.assert_close(actual.double(), expected.double(), rtol=tol, atol=tol)


def test_batch_has_correct_wrong_and_ignored_pixels():
    """The inputs below exercise every branch: correct, wrong and ignored pixels in each image."""
    logits, labels = make_batch(0)
    valid = labels != IGNORE
    correct = (logits.argmax(1) == labels) & valid
    for b in range(labels.shape[0]):
        assert correct[b].any() and (valid[b] & ~correct[b]).any() and (~valid[b]).any()


# ---- SegPGD (docs/method.md §2) -------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("t,T", [(1, 1), (1, 10), (4, 10), (10, 10), (3, 7)])
def test_segpgd_weights_and_map_brute_force(seed, t, T):
    logits, labels = make_batch(seed)
    lam = (t - 1) / (2 * T)
    weight = brute(lambda z, y: (1 - lam) if argmax(z) == y else lam, logits, labels)
    # float32 tolerance: see test_segpgd_weights_keep_the_logits_precision for float64
    close(segpgd_weights(logits, labels, t, T, IGNORE), weight, tol=1e-6)
    close(segpgd_map(logits, labels, t, T, IGNORE), brute(lambda z, y: ce(z, y), logits, labels) * weight, tol=1e-6)


def test_segpgd_weights_keep_the_logits_precision():
    """float64 logits must give float64-exact weights (1 - lambda_t, lambda_t); lambda_t = 3/20 is not a float32."""
    logits, labels = make_batch(0)
    w = segpgd_weights(logits, labels, 4, 10, IGNORE)
    assert w.dtype == torch.float64
    values = set(w[labels != IGNORE].tolist())
    assert values <= {0.15, 0.85}, f"weights rounded through float32: {sorted(values)}"


def test_segpgd_weights_are_detached_and_float32_works():
    logits, labels = make_batch(2, dtype=torch.float32)
    logits.requires_grad_(True)
    w = segpgd_weights(logits, labels, 3, 5, IGNORE)
    assert not w.requires_grad and w.dtype == torch.float32
    m = segpgd_map(logits, labels, 3, 5, IGNORE)
    (grad,) = torch.autograd.grad(m.sum(), logits)
    assert torch.isfinite(grad).all()
    assert (grad.permute(0, 2, 3, 1)[labels == IGNORE] == 0).all()


def test_segpgd_objective_divides_by_valid_pixels_per_image():
    """L_t of one image = weighted CE sum over V / |V|; the attack sums the images' values."""
    logits, labels = make_batch(3)
    t, T = 2, 5
    atk = SegPGD(nn.Identity(), steps=T)
    per_image = atk.objective(logits, labels, t, {})
    lam = (t - 1) / (2 * T)
    for b in range(labels.shape[0]):
        total, count = 0.0, 0
        for bb, _, _, z, y in pixels(logits, labels):
            if bb == b and y != IGNORE:
                total += ((1 - lam) if argmax(z) == y else lam) * ce(z, y)
                count += 1
        assert per_image[b].item() == pytest.approx(total / count, rel=1e-6)


# ---- CosPGD (docs/method.md §3) -------------------------------------------------------------------------------

def sigmoid(z):
    return [1 / (1 + math.exp(-v)) for v in z]


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("weight", ["softmax", "sigmoid"])
@pytest.mark.parametrize("targeted", [False, True])
def test_cospgd_map_brute_force(seed, weight, targeted):
    logits, labels = make_batch(seed)
    prob = softmax if weight == "softmax" else sigmoid

    def per_pixel(z, y):
        c = cos_onehot(prob(z), y)
        return ((1 - c) if targeted else c) * ce(z, y)

    close(cospgd_map(logits, labels, IGNORE, weight, targeted), brute(per_pixel, logits, labels))


def test_cospgd_weight_is_detached_and_ignored_pixels_have_no_gradient():
    logits, labels = make_batch(4, dtype=torch.float32)
    logits.requires_grad_(True)
    m = cospgd_map(logits, labels, IGNORE, "softmax")
    (grad,) = torch.autograd.grad(m.sum(), logits)
    # d/dz [cos * CE] with cos detached = cos * d CE/dz = cos * (softmax - onehot)
    z, valid = logits.detach(), labels != IGNORE
    q = z.softmax(1)
    onehot = torch.nn.functional.one_hot(torch.where(valid, labels, 0), K).permute(0, 3, 1, 2)
    cos = (q * onehot).sum(1) / q.norm(dim=1)
    expected = (cos * valid).unsqueeze(1) * (q - onehot)
    torch.testing.assert_close(grad, expected, rtol=1e-5, atol=1e-6)


def test_all_ignored_gives_zero_maps():
    logits, _ = make_batch(5)
    labels = torch.full((2, 5, 6), IGNORE)
    maps = [segpgd_map(logits, labels, 2, 4, IGNORE), cospgd_map(logits, labels, IGNORE),
            cospgd_map(logits, labels, IGNORE, "sigmoid", targeted=True), mce_map(logits, labels, IGNORE),
            mce_bal_map(logits, labels, IGNORE, torch.ones(K)), js_map(logits, labels, IGNORE)]
    for m in maps:
        assert m.shape == labels.shape and (m == 0).all()


# ---- the cospgd package ----------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("targeted", [False, True])
def test_cospgd_map_matches_cospgd_package(seed, targeted):
    logits, labels = make_batch(seed, ignore=False, dtype=torch.float32)
    ours = cospgd_map(logits, labels, IGNORE, "softmax", targeted)
    theirs = CosAttack.cospgd_scale(logits, labels, ce_map(logits, labels, IGNORE), num_classes=K, targeted=targeted)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


def test_cospgd_map_matches_cospgd_package_with_ignored_pixels():
    """The package clamps 255 to the last class, but CE is 0 there, so the maps still agree."""
    logits, labels = make_batch(6, dtype=torch.float32)
    ours = cospgd_map(logits, labels, IGNORE)
    theirs = CosAttack.cospgd_scale(logits, labels, ce_map(logits, labels, IGNORE), num_classes=K)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("t,T", [(1, 1), (1, 10), (2, 10), (7, 10), (10, 10), (3, 3), (50, 100)])
def test_segpgd_objective_matches_cospgd_package(n, t, T):
    """Without ignored pixels our per-image means summed over the batch (what the attack differentiates)
    equal the package's sum / (H*W) with its 0-based iteration t-1, value and gradient."""
    logits, labels = make_batch(10 + n, n=n, ignore=False, dtype=torch.float32)
    atk = SegPGD(nn.Identity(), steps=T)
    z1 = logits.clone().requires_grad_(True)
    ours = atk.objective(z1, labels, t, {}).sum()
    z2 = logits.clone().requires_grad_(True)
    theirs = CosAttack.segpgd_scale(z2, labels, ce_map(z2, labels, IGNORE), t - 1, T)
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-5)
    (g1,) = torch.autograd.grad(ours, z1)
    (g2,) = torch.autograd.grad(theirs, z2)
    torch.testing.assert_close(g1, g2, rtol=1e-5, atol=1e-7)


def test_segpgd_objective_differs_from_package_only_by_valid_pixel_count():
    """With ignored pixels the package divides by H*W, this project by |V| (docs/method.md §2)."""
    logits, labels = make_batch(7, n=1, dtype=torch.float32)
    ours = SegPGD(nn.Identity(), steps=5).objective(logits, labels, 3, {}).sum()
    theirs = CosAttack.segpgd_scale(logits, labels, ce_map(logits, labels, IGNORE), 2, 5)
    valid = int((labels != IGNORE).sum())
    assert valid < labels.numel()
    assert ours.item() == pytest.approx(theirs.item() * labels.numel() / valid, rel=1e-5)


# ---- APGD / SEA losses (docs/method.md §5) --------------------------------------------------------------------

@pytest.mark.parametrize("seed", [0, 1])
def test_mce_map_brute_force(seed):
    logits, labels = make_batch(seed)
    close(mce_map(logits, labels, IGNORE), brute(lambda z, y: ce(z, y) if argmax(z) == y else 0.0, logits, labels))


def test_mce_mask_is_detached():
    logits, labels = make_batch(8, dtype=torch.float32)
    logits.requires_grad_(True)
    (g,) = torch.autograd.grad(mce_map(logits, labels, IGNORE).sum(), logits)
    correct = (logits.detach().argmax(1) == labels)
    g_pix = g.permute(0, 2, 3, 1)
    assert (g_pix[~correct] == 0).all() and (g_pix[correct].abs().sum(-1) > 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_mce_bal_map_brute_force(seed):
    logits, labels = make_batch(seed)
    weights = torch.tensor([0.5, 2.0, 0.25, 1.25])
    expected = brute(lambda z, y: weights[y].item() * ce(z, y) if argmax(z) == y else 0.0, logits, labels)
    close(mce_bal_map(logits, labels, IGNORE, weights), expected)


def js_brute(z, y):
    p = softmax(z)
    e = [1.0 if k == y else 0.0 for k in range(len(z))]
    m = [(a + b) / 2 for a, b in zip(p, e)]
    kl_p = sum(a * math.log(a / c) for a, c in zip(p, m) if a > 0)
    kl_e = sum(a * math.log(a / c) for a, c in zip(e, m) if a > 0)
    return 0.5 * kl_p + 0.5 * kl_e


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_js_map_brute_force(seed):
    logits, labels = make_batch(seed)
    close(js_map(logits, labels, IGNORE), brute(js_brute, logits, labels))


def test_js_within_zero_and_log2_including_extreme_logits():
    logits, labels = make_batch(9, dtype=torch.float32)
    logits[0] *= 40  # saturated softmax: exact 0 and 1 probabilities
    js = js_map(logits, labels, IGNORE)
    assert torch.isfinite(js).all()
    assert (js >= -1e-6).all() and (js <= math.log(2) + 1e-6).all()
    # a one-hot prediction on the label gives 0, one on another class gives log 2
    z = torch.tensor([[[[60.0]], [[0.0]]]])
    assert js_map(z, torch.tensor([[[0]]]), IGNORE).item() == pytest.approx(0.0, abs=1e-6)
    assert js_map(z, torch.tensor([[[1]]]), IGNORE).item() == pytest.approx(math.log(2), abs=1e-6)


def test_js_gradient_is_finite_and_zero_at_ignored_pixels():
    logits, labels = make_batch(11, dtype=torch.float32)
    logits = (logits * 10).requires_grad_(True)
    (g,) = torch.autograd.grad(js_map(logits, labels, IGNORE).sum(), logits)
    assert torch.isfinite(g).all()
    assert (g.permute(0, 2, 3, 1)[labels == IGNORE] == 0).all()


# ---- reductions and class weights ------------------------------------------------------------------------

def test_masked_mean_per_image_and_per_batch():
    g = torch.Generator().manual_seed(0)
    values = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    mask = torch.rand(3, 4, 5, generator=g) < 0.5
    mask[2] = False  # an image without any pixel in the mask
    per_image = masked_mean(values, mask)
    for b in range(3):
        picked = [v for v, m in zip(values[b].flatten().tolist(), mask[b].flatten().tolist()) if m]
        assert per_image[b].item() == pytest.approx(sum(picked) / len(picked) if picked else 0.0, rel=1e-12)
    picked = [v for v, m in zip(values.flatten().tolist(), mask.flatten().tolist()) if m]
    assert masked_mean(values, mask, per_image=False).item() == pytest.approx(sum(picked) / len(picked), rel=1e-12)
    empty = torch.zeros_like(mask)
    assert (masked_mean(values, empty) == 0).all()
    assert masked_mean(values, empty, per_image=False).item() == 0


def test_class_weights_proportional_to_inverse_counts_with_mean_one():
    counts = [1000, 10, 250, 1, 4000]
    w = class_weights_from_counts(counts)
    assert w.shape == (5,) and w.mean().item() == pytest.approx(1.0, rel=1e-6)
    products = [wi * n for wi, n in zip(w.tolist(), counts)]
    assert max(products) == pytest.approx(min(products), rel=1e-5)
    assert class_weights_from_counts(torch.tensor(counts)).tolist() == pytest.approx(w.tolist())


def test_class_weights_zero_counts_get_rarest_present_weight():
    counts = [100, 0, 20, 50, 0]
    w = class_weights_from_counts(counts).tolist()
    assert w[1] == pytest.approx(w[2]) and w[4] == pytest.approx(w[2])
    assert sum(w) / len(w) == pytest.approx(1.0, rel=1e-6)
    assert w[0] * 100 == pytest.approx(w[2] * 20, rel=1e-6) and w[3] * 50 == pytest.approx(w[2] * 20, rel=1e-6)


@pytest.mark.parametrize("bad", [[], [0, 0, 0], [5, -1, 3], [[1, 2], [3, 4]]])
def test_class_weights_bad_input_raises(bad):
    with pytest.raises(ValueError, match="class_counts"):
        class_weights_from_counts(bad)


def test_class_weights_nan_count_raises():
    """A NaN count is bad input too; it must not silently become 'no pixels' (docs/design.md principle 5)."""
    with pytest.raises(ValueError, match="class_counts"):
        class_weights_from_counts([10.0, float("nan"), 3.0])
