"""Every registered attack on one model of each library family (model/library/): the call contract (eps ball,
[0,1], the train/eval flags restored, parameter gradients untouched), every attack's loss rising on briefly trained
models (adv_lib's minimal-norm attacks: the fooled fraction), and RP-PGD++ on the hooked features."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from library_models import library_cfg
from test_attack_properties import params, sample
from test_attack_trained import assert_the_attack_raises_its_loss

from attack import ATTACKS, build_attack
from model import build_model
from util.data.dataset import SegDataset

FAMILIES = ["torchvision-lraspp", "smp-unet", "hf-segformer", "python"]
# adv_lib's attacks return the clean image until they fool 99% of an image's valid pixels, which random labels on an
# untrained model may never allow in a few steps; tests/test_rse_attacks.py shows them moving images
MINIMAL_NORM = {"dag", "pdpgd", "alma-prox", "asma", "pdgd"}
FEATURES = {"torchvision-lraspp": [], "smp-unet": [], "hf-segformer": [], "python": ["MODEL.feature_layer", "body"]}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(0)
    built = {}
    for key in FAMILIES:
        model = build_model(library_cfg(tmp_path_factory.mktemp(key), key, *FEATURES[key]))
        with torch.no_grad():  # BatchNorm statistics of its own, so eval and train mode differ
            model.train()(torch.rand(4, 3, 32, 32))
        built[key] = model
    return built


def heavy(key: str):
    """torchvision's and smp's smallest models take seconds per attack on two CPU cores: slow-marked."""
    return pytest.param(key, marks=pytest.mark.slow) if key.startswith(("torchvision", "smp")) else key


@pytest.mark.parametrize("name", list(ATTACKS))
@pytest.mark.parametrize("key", [heavy(k) for k in FAMILIES])
def test_every_attack_keeps_the_contract_on_every_family(models, key, name):
    model = models[key]
    x, y = sample(1, 45, 37)
    x_copy = x.clone()
    model.train()
    leaf = next(m for m in model.net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    leaf.eval()  # a mixed-mode model: each module's own flag must come back
    flags = [m.training for m in model.modules()]
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    atk = build_attack(name, model, **params(name, seed=1))  # params() drops the seed of attacks that draw nothing
    adv = atk(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() <= atk.eps + 1e-6
    assert name in MINIMAL_NORM or not torch.equal(adv, x), f"{name} did not change the image"
    assert torch.equal(x, x_copy)
    assert [m.training for m in model.modules()] == flags, "train/eval flags were not restored"
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters())


def brief_training(model, images, labels, steps: int = 25, balanced: bool = False):
    """A few Adam steps (with `balanced`, CE weighted by inverse class frequency), then BatchNorm's statistics
    measured on the images (so that eval mode fits)."""
    weight = None
    if balanced:
        counts = torch.bincount(labels[labels != 255], minlength=7).float().clamp(min=1)
        weight = counts.sum() / (len(counts) * counts)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(images), labels, weight=weight, ignore_index=255).backward()
        opt.step()
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a cumulative average
    with torch.no_grad():
        model(images)
    return model.eval()


# the tiny SegFormer and the smp U-Net predict background (88% of the pixels) everywhere after 25 plain steps, and
# no attack can move such a model's prediction; class-balanced CE over more steps gives them every class
TRAINING = {"hf-segformer": {"steps": 150, "balanced": True}, "smp-unet": {"steps": 60, "balanced": True}}
# settings under which each adv_lib attack fools 99% of an image's valid pixels within its steps on these models
# (DAG's and ALMA prox's presets are sized for 8/255 on trained networks; ASMA, a targeted attack, aims at the
# background class here, and its preset step factors 1e-7 and 1e-6 are sized for ImageNet-scale logit sums)
MINIMAL_NORM_SETTINGS = {"dag": {"gamma": 0.05, "steps": 100}, "pdpgd": {"steps": 200},
                         "pdgd": {"steps": 200, "primal_lr": 0.3}, "alma-prox": {"steps": 200, "lr_init": 0.01},
                         "asma": {"steps": 200, "target_class": 0, "tau": 0.01, "beta": 0.01}}


# a feature layer at stride 8 or finer, so that the demo's 48x48 images give several classes' prototypes
LAYERS = {"torchvision-lraspp": "backbone.6", "smp-unet": "encoder", "hf-segformer": "segformer.stages.1",
          "python": "body"}


def demo_batch(tiny_data):
    data = SegDataset(tiny_data, "list/train.txt", 7)
    return torch.stack([data[i][0] for i in range(8)]), torch.stack([data[i][1] for i in range(8)])


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_data):
    """One briefly trained model per family (built when first asked for) and the 8 demo images it was trained on."""
    images, labels = demo_batch(tiny_data)
    built = {}

    def get(key):
        if key not in built:
            torch.manual_seed(0)
            cfg = library_cfg(tmp_path_factory.mktemp(key), key, "MODEL.feature_layer", LAYERS[key])
            built[key] = brief_training(build_model(cfg), images, labels, **TRAINING.get(key, {}))
        return built[key], images, labels
    return get


@pytest.mark.parametrize("name", [n for n in ATTACKS if n not in MINIMAL_NORM])
@pytest.mark.parametrize("key", [heavy(k) for k in FAMILIES])
def test_every_attack_raises_its_loss_on_every_briefly_trained_family(trained, key, name):
    """As tests/test_attack_trained.py on our own TinySeg."""
    model, images, labels = trained(key)
    # PAdam's preset step is 2/255 whatever eps is: eps/4 here, as at its preset 8/255
    step = {"alpha": 0.025} if name.startswith("padam") else {}
    assert_the_attack_raises_its_loss(model, images, labels, name, eps=0.1, **step)


@pytest.mark.slow  # hundreds of adv_lib steps per attack
@pytest.mark.parametrize("name", sorted(MINIMAL_NORM))
@pytest.mark.parametrize("key", FAMILIES)
def test_every_minimal_norm_attack_fools_more_pixels_on_every_briefly_trained_family(trained, key, name):
    """adv_lib's attacks raise the fraction of fooled pixels (ASMA: of pixels on its target), their trace's loss,
    from the clean image to the image clamped to the eps ball (DAG returns the clean image until it fools 99% of an
    image's pixels, so it passes only by finding such images)."""
    model, images, labels = trained(key)
    result = build_attack(name, model, eps=0.1, **MINIMAL_NORM_SETTINGS[name]).run(images, labels)
    first, last = result.trace[0].loss, result.trace[-1].loss
    assert last > first + 0.03, f"{name}: fooled {first:.3f} -> {last:.3f}"


@pytest.mark.parametrize("key", [heavy(k) for k in FAMILIES])
def test_the_loss_rises_and_rppgd_plus_plus_moves_the_image_through_the_hooked_features(trained, key):
    model, images, labels = trained(key)
    with torch.no_grad():
        clean = F.cross_entropy(model(images), labels, ignore_index=255)
    for name in ("pgd", "rppgd++"):
        adv = build_attack(name, model, eps=0.1, alpha=0.03, steps=5, seed=0)(images, labels)
        with torch.no_grad():
            attacked = F.cross_entropy(model(adv), labels, ignore_index=255)
        assert attacked > clean * 1.05, f"{name}: CE {clean:.4f} -> {attacked:.4f}"

    seen = []
    handle = model.net.get_submodule(LAYERS[key]).register_forward_hook(lambda m, i, o: seen.append(o))
    atk = build_attack("rppgd++", model, eps=0.1, alpha=0.03, steps=2, random_start=False, w_region=0.0)
    adv = atk(images, labels)
    handle.remove()
    assert len(seen) == 2, "one forward per step through the feature layer"
    assert not torch.equal(adv, images), "the prototype terms alone (w_region 0) must move the image"
    assert (adv - images).abs().max() <= 0.1 + 1e-6
