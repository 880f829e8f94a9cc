"""The attacks of the rse ensemble (Halmosi et al., ECCV 2024) that SEA lacks: PAdam, APGD with SegPGD's loss and with
the masked normalised correct-logit loss, and adv_lib's minimal-norm attacks clamped to the eps ball.

Their call contract and (for PAdam and APGD) the rising loss on a trained model are in test_attack_properties.py and
test_attack_trained.py with every registered attack; here: the new losses by hand, PAdam's first step by hand,
adv_lib's attacks against adv_lib called directly, their minimal-norm figure, and ALMA prox on a batch whose images
have different numbers of valid pixels (where adv_lib 0.2.8 alone fails).
"""
from __future__ import annotations

import math
import sys

import pytest
import torch
import torch.nn.functional as F
from test_known_answer import LinearPixels
from tiny_models import TinySeg

from attack import build_attack
from attack.apgd import loss_map
from attack.losses import cosine_distance_map, norm_corrlog_map
from attack.minimal_norm import ADV_THRESHOLD, adv_lib_segmentation
from engine.passes import PassCounter, check_passes

EPS = 8 / 255


def test_norm_corrlog_and_cosine_maps_by_hand():
    # one image of 1x3 pixels, 2 classes; logits (3, 4), (4, 3), (3, 4); labels 1, 1, ignored
    logits = torch.tensor([[3.0, 4.0, 3.0], [4.0, 3.0, 4.0]]).T.reshape(1, 3, 2).permute(0, 2, 1).unsqueeze(2)
    labels = torch.tensor([[[1, 1, 255]]])
    # pixel 0: correct (4 > 3), -4/5; pixel 1: wrong, 0; pixel 2: ignored, 0
    assert torch.allclose(norm_corrlog_map(logits, labels, 255), torch.tensor([[[-0.8, 0.0, 0.0]]]))
    # 1 - z_y / ||z||: 1 - 4/5, 1 - 3/5, ignored 0
    assert torch.allclose(cosine_distance_map(logits, labels, 255), torch.tensor([[[0.2, 0.4, 0.0]]]))


def test_apgd_segpgd_loss_follows_lambda_k_over_2T():
    g = torch.Generator().manual_seed(0)
    logits, labels = torch.randn(2, 4, 5, 6, generator=g), torch.randint(0, 4, (2, 5, 6), generator=g)
    labels[0, 0] = 255
    ce = F.cross_entropy(logits, labels, ignore_index=255, reduction="none")
    correct = (logits.argmax(1) == labels).float()
    for k, steps in ((0, 10), (3, 10), (10, 10), (7, 300)):
        lam = k / (2 * steps)
        expected = ((1 - lam) * correct + lam * (1 - correct)) * ce * (labels != 255)
        assert torch.allclose(loss_map("segpgd", logits, labels, 255, None, k, steps), expected)
    atk = build_attack("apgd-segpgd", TinySeg(4), steps=10)
    valid = (labels != 255).float()
    lam = 2 / 20  # APGD's step 3 is iterate k = 2
    per_image = (((1 - lam) * correct + lam * (1 - correct)) * ce * valid).flatten(1).sum(1) / valid.flatten(1).sum(1)
    assert torch.allclose(atk.objective(logits, labels, 3, {"steps": 10}), per_image)


def test_padam_first_step_is_alpha_times_the_gradient_over_its_magnitude():
    """From the clean image, AMSGrad's first step is alpha * g / (|g| + 1e-8) (bias-corrected moments g and g^2); on
    the per-pixel linear model g = dCE/ds_p * w / |V| with dCE/ds = sigmoid(s) - [y = 1]."""
    model = LinearPixels().double()
    x = 0.1 + 0.8 * torch.rand(2, 3, 5, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    s = torch.einsum("c,nchw->nhw", model.w, x) + 0.05
    y = (torch.rand(2, 5, 7, generator=torch.Generator().manual_seed(4)) < 0.5).long()
    y[1, 0] = 255
    valid = (y != 255).double()
    dce = (torch.sigmoid(s) - (y == 1).double()) * valid / valid.flatten(1).sum(1).view(-1, 1, 1)
    grad = dce.unsqueeze(1) * model.w.view(1, 3, 1, 1)
    alpha, eps = 0.004, 0.01
    expected = (x + (x + alpha * grad / (grad.abs() + 1e-8) - x).clamp(-eps, eps)).clamp(0, 1)
    out = build_attack("padam-ce", model, eps=eps, alpha=alpha, steps=1, random_start=False)(x, y)
    assert torch.allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize("name", ["padam-ce", "padam-cos", "apgd-segpgd", "apgd-mask-norm-corrlog"])
def test_the_loss_rises_on_the_trained_model(trained_tiny, name):
    model, x, y = trained_tiny
    trace = build_attack(name, model, steps=8, random_start=False).run(x, y).trace
    losses = [r.loss for r in trace]
    best = max(losses[1:])  # APGD returns its lowest-accuracy iterate; its loss is the highest one it reached
    assert best > losses[0] + 0.05 * abs(losses[0]), f"{name}: {losses}"
    assert trace[-1].pixel_acc < trace[0].pixel_acc


# ---- adv_lib ------------------------------------------------------------------------------------------------

def labelled_by_the_model(model, x):
    with torch.no_grad():
        y = model(x).argmax(1)
    y[0, 0] = 255  # an ignored row
    return y


@pytest.mark.parametrize("name,params,direct,fools", [
    ("dag", {"gamma": 0.02, "steps": 100}, lambda seg, m, x, y: seg.dag(m, x, y, max_iter=100, γ=0.02), True),
    ("pdpgd", {"steps": 60, "primal_lr": 0.3},
     lambda seg, m, x, y: seg.pdpgd(m, x, y, norm=float("inf"), num_steps=60, primal_lr=0.3), True),
    # PDGD minimises the L2 norm and fools 95% of the pixels here: no min_norm, but the same clamped image
    ("pdgd", {"steps": 60, "primal_lr": 0.3}, lambda seg, m, x, y: seg.pdgd(m, x, y, num_steps=60, primal_lr=0.3),
     False),
])
def test_minimal_norm_attacks_are_adv_lib_clamped_and_record_its_norm(name, params, direct, fools):
    """The fixed-budget image is adv_lib's image clamped to the eps ball (as rse clamps it), and min_norm is the L-inf
    norm of adv_lib's image where it fools >= 99% of the valid pixels, which no perturbation smaller than the 99%
    quantile of the per-pixel lower bounds |s_p| / ||w||_1 can do on the per-pixel linear model."""
    model = LinearPixels().double()
    x = 0.1 + 0.8 * torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = labelled_by_the_model(model, x)
    eps = 0.02
    result = build_attack(name, model, eps=eps, **params).run(x, y, trace=False)
    found = direct(adv_lib_segmentation(), model, x, y)
    assert torch.equal(result.adv, torch.clamp(found, x - eps, x + eps))
    assert (result.adv - x).abs().max() <= eps + 1e-12 and not torch.equal(result.adv, x)
    norm = (found - x).flatten(1).abs().amax(1)
    fooled = ((model(found).argmax(1) != y) & (y != 255)).flatten(1).sum(1).double() / (y != 255).flatten(1).sum(1)
    assert torch.equal(result.extras["fooled"], fooled)
    success = fooled >= ADV_THRESHOLD
    assert bool(success.all()) == fools
    assert torch.equal(result.extras["min_norm"], torch.where(success, norm, math.inf))
    s = torch.einsum("c,nchw->nhw", model.w, x) + 0.05
    for i in torch.nonzero(success).flatten().tolist():
        need = (s[i][y[i] != 255].abs() / model.w.abs().sum()).sort().values
        bound = need[math.ceil(ADV_THRESHOLD * len(need)) - 1]
        assert result.extras["min_norm"][i] >= bound - 1e-12


def test_minimal_norm_trace_holds_the_clean_and_the_returned_image():
    model = LinearPixels().double()
    x = 0.1 + 0.8 * torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = labelled_by_the_model(model, x)
    result = build_attack("dag", model, eps=0.05, gamma=0.02, steps=100).run(x, y)
    assert [r.step for r in result.trace] == [0, 100]
    assert result.trace[0].loss == pytest.approx(0.0)  # the labels are the clean predictions: nothing fooled
    assert result.trace[1].loss > 0.1 and result.trace[1].pixel_acc < result.trace[0].pixel_acc - 0.1


def test_alma_prox_runs_image_by_image_where_adv_lib_fails_on_the_batch():
    """Images with different numbers of valid pixels: adv_lib's alma_prox asks for the k-th largest constraint with a
    per-image k of 0 for the image with fewer pixels and fails; the registry's alma-prox equals adv_lib called on each
    image alone, clamped, and its passes are those of two single-image calls (the benchmark's pass check)."""
    torch.manual_seed(0)
    model = TinySeg(5, width=8).double().eval()
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    y = labelled_by_the_model(model, x)
    y[1, :7] = 255  # 256 - 16 and 256 - 112 valid pixels: k = int(0.01 * valid * i / 9) is 1 and 0 at i = 4
    seg = adv_lib_segmentation()
    with pytest.raises((IndexError, RuntimeError), match="out of bounds"):
        seg.alma_prox(model, x, y, num_steps=10, lr_init=0.01)
    atk = build_attack("alma-prox", model, steps=10, lr_init=0.01)
    with PassCounter(model) as counter:
        out = atk(x, y)
    check_passes(atk, counter, len(x))
    assert (counter.forward, counter.backward) == atk.expected_passes(2) == (21, 20)
    alone = torch.cat([seg.alma_prox(model, x[i:i + 1], y[i:i + 1], num_steps=10, lr_init=0.01) for i in range(2)])
    assert torch.equal(out, torch.clamp(alone, x - EPS, x + EPS))
    assert not torch.equal(out, x)


def test_asma_is_adv_lib_targeted_image_by_image_and_records_the_norm_that_reaches_the_target():
    """ASMA toward class 1 on the per-pixel linear model: adv_lib's targeted asma on each image alone, clamped; the
    fraction of valid pixels predicted as the target (its trace's loss) rises, and min_norm is the L-inf norm of
    adv_lib's image where 99% of them are."""
    model = LinearPixels().double()
    model.w.mul_(10)  # ASMA's L2 penalty holds a pixel's step at w/2: a steep model lets 99% of them reach the target
    x = 0.1 + 0.8 * torch.rand(2, 3, 9, 11, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = labelled_by_the_model(model, x)
    eps, options = 0.05, {"num_steps": 200, "τ": 0.05, "β": 0.05}
    result = build_attack("asma", model, target_class=1, eps=eps, steps=200, tau=0.05, beta=0.05).run(x, y)
    target = torch.where(y != 255, torch.ones_like(y), y)
    seg = adv_lib_segmentation()
    alone = torch.cat([seg.asma(model, x[i:i + 1], target[i:i + 1], masks=(y != 255)[i:i + 1], targeted=True,
                                **options) for i in range(2)])
    assert torch.equal(result.adv, torch.clamp(alone, x - eps, x + eps))
    with torch.no_grad():
        hit = ((model(alone).argmax(1) == 1) & (y != 255)).flatten(1).sum(1).double() / (y != 255).flatten(1).sum(1)
    success = hit >= ADV_THRESHOLD
    assert torch.equal(result.extras["fooled"], hit) and bool(success.any()), hit
    assert torch.equal(result.extras["min_norm"], torch.where(success, (alone - x).flatten(1).abs().amax(1), math.inf))
    assert result.trace[-1].loss > result.trace[0].loss + 0.05  # the clamped image: more pixels on the target


def test_adv_lib_is_imported_without_leaving_a_visdom_placeholder():
    adv_lib_segmentation()
    assert "adv_lib.attacks.segmentation" in sys.modules
    visdom = sys.modules.get("visdom")
    assert visdom is None or "placeholder" not in (visdom.__doc__ or "")


@pytest.mark.slow
def test_the_evaluation_reports_the_minimal_norm_figure(tiny_cfg, trained_tiny, tmp_path):
    """metrics.json holds a minimal-norm attack's own figure per image (as the attack computes it on the same
    images), its median and the fooled fraction against eps; report.md says it."""
    import json

    from torch.utils.data import Subset

    from engine.robustness import RobustnessEvaluation
    from util.data.dataset import build_dataset
    from util.data.loader import make_loader

    model, x, y = trained_tiny
    cfg = tiny_cfg()
    spec = {"name": "pdpgd", "eps": 0.02, "steps": 60, "primal_lr": 0.3}
    loader = make_loader(Subset(build_dataset(cfg, "val", train=False), range(4)), 2, 0, 0, 1, train=False)
    result = RobustnessEvaluation(cfg, model, attacks=[spec]).run(loader, tmp_path, "minnorm")
    entry = json.loads((result.result_dir / "metrics.json").read_text())["attacks"]["pdpgd"]["min_norm"]
    direct = build_attack("pdpgd", model, **{k: v for k, v in spec.items() if k != "name"}).run(x, y, trace=False)
    expected = direct.extras["min_norm"].tolist()
    assert entry["per_image"] == pytest.approx([None if math.isinf(v) else v for v in expected], abs=1e-6)
    assert entry["found"] == sum(not math.isinf(v) for v in expected) > 0
    curve = {c["eps"]: c["fooled_fraction"] for c in entry["curve"]}
    assert curve[0.02] == sum(v <= 0.02 for v in expected) / 4 and curve[16 / 255] >= curve[1 / 255]
    report = (result.result_dir / "report.md").read_text()
    assert "smallest L-inf norm that fools 99%" in report
    assert "the greedy dataset-level choice: `pdpgd` 4 (of 4 images)." in report


def test_min_norm_entry_by_hand():
    inf = math.inf
    entry = min_norm_entry_of({0: 2 / 255, 1: inf, 2: 1 / 255, 3: math.nan, 4: 5 / 255})
    assert entry["median"] == pytest.approx(3.5 / 255) and (entry["found"], entry["images"]) == (3, 4)
    curve = {round(255 * c["eps"]): c["fooled_fraction"] for c in entry["curve"]}
    assert curve == {1: 0.25, 2: 0.5, 4: 0.5, 8: 0.75, 12: 0.75, 16: 0.75}
    assert entry["per_image"] == [2 / 255, None, 1 / 255, None, 5 / 255]
    assert min_norm_entry_of({0: inf, 1: inf, 2: 1 / 255})["median"] is None


def min_norm_entry_of(values: dict) -> dict:
    from engine.report import min_norm_entry
    return min_norm_entry(values, 8 / 255)


@pytest.mark.parametrize("name", ["pdpgd", "pdgd", "alma-prox"])
def test_adv_lib_attacks_whose_schedule_divides_by_steps_minus_one_refuse_one_step(name):
    """adv_lib 0.2.8 divides by num_steps - 1 in these three (ZeroDivisionError at one step): refused up front."""
    with pytest.raises(ValueError, match=f"{name} needs steps >= 2"):
        build_attack(name, TinySeg(), steps=1)
