"""The call contract of every registered attack (docs/design.md, Attack) on a small model, batch 1 and 3, odd sizes."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TinySeg

from attack import ATTACKS, attack_parameters, build_attack

CLASSES = 7
COUNTS = [50, 40, 30, 20, 10, 5, 1]
FAST = {"apgd-ce": {"steps": 4}, "apgd-mce": {"steps": 4}, "apgd-mce-bal": {"steps": 4, "class_counts": COUNTS},
        "apgd-js": {"steps": 4}, "apgd-segpgd": {"steps": 4}, "apgd-mask-norm-corrlog": {"steps": 4},
        "sea": {"steps": 6, "class_counts": COUNTS},
        "dag": {"steps": 10, "gamma": 0.1}, "pdpgd": {"steps": 10, "primal_lr": 0.1}, "pdgd": {"steps": 10},
        "alma-prox": {"steps": 10, "lr_init": 0.01}, "asma": {"steps": 10, "tau": 1e-3, "target_class": 2}}
# adv_lib's DAG and PDPGD return the clean image until they fool 99% of an image's valid pixels (PDPGD: more than
# the clean image does), which random labels on an untrained model never allow; tests/test_rse_attacks.py shows
# them changing images on a per-pixel linear model
CLEAN_UNTIL_FOOLED = {"dag", "pdpgd"}
DETERMINISTIC = {name for name in ATTACKS if "seed" not in attack_parameters(name)}  # fgsm, adv_lib's attacks


def params(name: str, **extra) -> dict:
    """Cheap parameters for attack `name`; `seed` and `random_start` are dropped for attacks that draw nothing."""
    p = {"steps": 3} if name != "fgsm" else {}
    if name in ("rppgd", "rppgd++"):
        p["alpha"] = 0.01
    p.update(FAST.get(name, {}))
    p.update(extra)
    if name in DETERMINISTIC:
        p = {k: v for k, v in p.items() if k not in ("seed", "random_start")}
    return p


def sample(batch: int, h: int = 29, w: int = 23, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, h, w, generator=g)
    y = torch.randint(0, CLASSES, (batch, h, w), generator=g)
    y[:, :2] = 255  # an ignored band
    return x, y


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    m = TinySeg(CLASSES)
    with torch.no_grad():  # non-trivial BN statistics, so eval and train mode give different outputs
        m.train()
        m(torch.rand(4, 3, 32, 32))
    return m


def variants():
    for name in ATTACKS:
        yield name, {}
    for name in ("pgd", "segpgd", "cospgd"):
        yield name, {"norm": "l2", "eps": 0.5, "alpha": 0.2}
    for name in ("rppgd", "rppgd++"):
        yield name, {"variant": "release", "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    yield "cospgd", {"weight": "sigmoid"}
    yield "pgd", {"targeted": True, "target_class": 2}
    yield "pgd", {"best": True}


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("name,extra", list(variants()), ids=lambda v: v if isinstance(v, str) else
                         "-".join(f"{k}={x}" for k, x in v.items()) or "default")
def test_contract(model, name, extra, batch):
    x, y = sample(batch)
    x_copy, y_copy = x.clone(), y.clone()
    model.train()
    model.head[0].eval()  # a mixed-mode model: each module's own flag must come back
    for p in model.parameters():
        p.grad = torch.full_like(p, 0.5)
    stats = [b.clone() for b in model.buffers()]
    atk = build_attack(name, model, **params(name, seed=1, **extra)) if name != "fgsm" else \
        build_attack(name, model, **extra)
    adv = atk(x, y)

    assert adv.shape == x.shape and adv.dtype == x.dtype and adv.device == x.device
    assert not adv.requires_grad
    assert adv.min() >= 0 and adv.max() <= 1
    if atk.params().get("norm", "linf") == "l2":
        assert (adv - x).flatten(1).norm(dim=1).max() <= atk.eps + 1e-5
    else:
        assert (adv - x).abs().max() <= atk.eps + 1e-6
    assert name in CLEAN_UNTIL_FOOLED or not torch.equal(adv, x), "the attack did not change the image"
    assert torch.equal(x, x_copy) and torch.equal(y, y_copy), "inputs were modified"
    assert model.training and not model.head[0].training, "train/eval flags were not restored"
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in model.parameters()), "parameter .grad changed"
    assert all(torch.equal(a, b) for a, b in zip(stats, model.buffers())), "BN statistics changed (not eval mode)"
    if name != "fgsm":
        assert torch.equal(adv, atk(x, y)), "same seed, different result"


@pytest.mark.parametrize("name", list(ATTACKS))
def test_all_ignored_leaves_image_unchanged(model, name):
    x, y = sample(2, 21, 19)
    y[:] = 255
    no_start = {} if name in ("fgsm", "bim", "pirat-pgd") else {"random_start": False}
    atk = build_attack(name, model, **(params(name, **no_start) if name != "fgsm" else {}))
    assert torch.equal(atk(x, y), x)


@pytest.mark.parametrize("name", ["pgd", "segpgd", "cospgd", "rppgd++", "apgd-ce"])
def test_run_trace_and_call_agree(model, name):
    x, y = sample(2, 25, 27)
    atk = build_attack(name, model, seed=4, **params(name))
    result = atk.run(x, y)
    assert torch.equal(result.adv, atk(x, y))
    assert [r.step for r in result.trace] == list(range(atk.steps + 1))
    assert all(0 <= r.pixel_acc <= 1 for r in result.trace)


def test_random_start_depends_on_seed(model):
    x, y = sample(1)
    a = build_attack("pgd", model, steps=1, seed=1)(x, y)
    b = build_attack("pgd", model, steps=1, seed=2)(x, y)
    assert not torch.equal(a, b)


def test_best_iterate_has_lowest_accuracy(model):
    x, y = sample(3)
    atk = build_attack("pgd", model, steps=4, seed=0, best=True, alpha=0.02)
    result = atk.run(x, y)
    with torch.no_grad():
        model.eval()
        acc_best = (model(result.adv).argmax(1) == y)[y != 255].float().mean()
    assert acc_best <= min(r.pixel_acc for r in result.trace) + 1e-6


def test_rejects_images_outside_unit_range(model):
    x, y = sample(1)
    with pytest.raises(ValueError, match=r"\[0,1\]"):
        build_attack("pgd", model)(x * 3, y)
    with pytest.raises(ValueError, match="labels"):
        build_attack("pgd", model)(x, y[:, :5])


# pirat-pgd chooses its iterate by the batch's loss: by definition an image's result depends on its batch
@pytest.mark.parametrize("name,extra", [(n, {}) for n in ATTACKS if n not in ("fgsm", "pirat-pgd")] +
                         [("pgd", {"norm": "l2", "eps": 0.5})],
                         ids=lambda v: v if isinstance(v, str) else "-".join(f"{k}={x}" for k, x in v.items()) or "")
def test_per_image_seeds_make_an_image_independent_of_its_batch(model, name, extra):
    """Robust evaluation seeds each image by its dataset index: a batch of 1 and a batch of 4 agree."""
    x, y = sample(4)
    atk = build_attack(name, model, **params(name, seed=7, **extra))
    seeds = [11, 12, 13, 14]
    batched = atk(x, y, seeds=seeds)
    alone = torch.cat([atk(x[i:i + 1], y[i:i + 1], seeds=seeds[i:i + 1]) for i in range(4)])
    # batched convolutions round differently: L2 steps move by ~1e-8, and a sign step can flip where a gradient
    # is ~0; allow 0.1% of the values to differ by more than 1e-5
    assert ((batched - alone).abs() > 1e-5).float().mean() < 1e-3
    if atk.random_start and name not in DETERMINISTIC:  # BIM starts at the clean image
        assert not torch.equal(atk(x, y, seeds=[1, 2, 3, 4]), batched), "the seeds choose the random start"
    with pytest.raises(ValueError, match="one int per image"):
        atk(x, y, seeds=[1, 2])


@pytest.mark.parametrize("name", list(ATTACKS))
def test_one_attack_object_serves_nested_calls(model, name):
    """An attack keeps nothing of a call on itself: a second call made from inside the first (through on_iterate)
    gives what a call of its own gives, and the outer call still ends as it would alone, with its zero-gradient
    findings intact."""
    x, y = sample(2, 21, 19)
    y[1] = 255  # the second image has no valid pixel: no gradient, no finding
    atk = build_attack(name, model, **params(name, seed=3)) if name != "fgsm" else build_attack(name, model)
    inner_alone, outer_alone = atk(x[:1], y[:1]), atk.run(x, y, trace=False)
    inner = []

    def nested(step, logits):
        if not inner:
            inner.append(atk(x[:1], y[:1]))
    outer = atk.run(x, y, trace=False, on_iterate=nested)
    assert inner and torch.equal(inner[0], inner_alone)
    assert torch.equal(outer.adv, outer_alone.adv)
    assert outer.zero_gradient == outer_alone.zero_gradient
