"""PIR-AT (docs/training.md, "The PIR-AT recipe, point by point"): SEA's training PGD and its choice of iterate, the
adamw groups, the warmup-poly and poly-sea schedules by hand, the recipe pirat, and its configs."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TinySeg
from torch import nn

from attack import build_attack
from conftest import ROOT
from engine.optim import build_optimizer, build_scheduler
from engine.passes import PassCounter
from engine.recipes import RECIPES, segmentation_loss
from model import build_model
from util.config import load_config
from util.errors import UserError


class Scripted(nn.Module):
    """Two classes; call k (0-based) gives image i the class-0 logit offsets[k][i] + 0.1 x (the pixel's channel mean),
    class 1 the logit 0. With every label 1 the loss is softplus of that logit: its gradient is positive everywhere, so
    every step adds alpha to every pixel (until the eps ball stops it), and the offsets decide which step's batch loss
    is highest."""

    def __init__(self, offsets: list[list[float]]) -> None:
        super().__init__()
        self.offsets, self.calls = torch.tensor(offsets, dtype=torch.float64), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.offsets[self.calls].view(-1, 1, 1)
        self.calls += 1
        logit = s + 0.1 * x.mean(1)
        return torch.stack([logit, torch.zeros_like(logit)], 1)


def scripted_run(offsets, eps, alpha=0.01):
    model = Scripted(offsets)
    n = len(offsets[0])
    x = 0.2 + 0.3 * torch.rand(n, 3, 5, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.ones(n, 5, 6, dtype=torch.long)
    result = build_attack("pirat-pgd", model, eps=eps, alpha=alpha, steps=len(offsets)).run(x, y, trace=False)
    assert model.calls == len(offsets), "one forward per step: the last iterate's loss is never evaluated"
    return x, result


def test_pirat_pgd_returns_the_iterate_right_after_the_highest_loss():
    # batch losses peak at step 1 (0-based): x_1 = x + 0.01 has the highest loss, x_2 = x + 0.02 is returned
    x, result = scripted_run([[0, 0], [4, 4], [1, 1], [2, 2], [3, 3]], eps=0.1)
    assert int(result.extras["selected"]) == 2
    assert torch.allclose(result.adv, x + 0.02, atol=1e-12)


def test_pirat_pgd_chooses_for_the_whole_batch():
    # image 0 alone peaks at step 1, image 1 at step 3; the batch mean peaks at step 3: both images get x_4
    x, result = scripted_run([[0, 0], [4, 0], [0, 0], [0, 6], [0, 0]], eps=0.1)
    assert int(result.extras["selected"]) == 4
    assert torch.allclose(result.adv, x + 0.04, atol=1e-12)


def test_pirat_pgd_keeps_the_later_of_equal_losses():
    # eps 0.02 stops the iterates at x + 0.02 from step 2 on: steps 2 and 3 see the same image and the same offset,
    # so the same loss; SEA's >= keeps the later one (selected x_4), and the image is still x + 0.02
    x, result = scripted_run([[0], [1], [3], [3], [2]], eps=0.02)
    assert int(result.extras["selected"]) == 4
    assert torch.allclose(result.adv, x + 0.02, atol=1e-12)


def test_pirat_pgd_presets_are_seas():
    atk = build_attack("pirat-pgd", TinySeg())
    assert atk.params() == {"eps": 4 / 255, "alpha": 0.01, "steps": 5, "ignore_index": 255}
    assert not atk.random_start


def tiny_model_cfg(tiny_cfg, *overrides):
    cfg = tiny_cfg(*overrides)
    return build_model(cfg), cfg


def test_adamw_groups_follow_seas_decay_rule(tiny_cfg):
    model, cfg = tiny_model_cfg(tiny_cfg, "TRAIN.optimizer", "adamw", "TRAIN.head_lr_mult", "1.0",
                                "TRAIN.base_lr", "0.001", "TRAIN.weight_decay", "0.01")
    model.backbone.conv1.weight.requires_grad_(False)  # frozen parameters are left out, as SEA's group_weight does
    optimizer = build_optimizer(model, cfg)
    assert isinstance(optimizer, torch.optim.AdamW) and len(optimizer.param_groups) == 2
    decay, no_decay = optimizer.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in decay["params"]} == \
        {n for n, p in model.named_parameters() if p.ndim > 1 and n != "backbone.conv1.weight"}
    assert {names[id(p)] for p in no_decay["params"]} == {n for n, p in model.named_parameters() if p.ndim == 1}
    assert any(n.endswith("bn1.weight") for n in map(names.get, map(id, no_decay["params"])))
    assert (decay["weight_decay"], no_decay["weight_decay"]) == (0.01, 0.0)
    assert all(g["lr"] == 0.001 and g["betas"] == (0.9, 0.999) and g["eps"] == 1e-8 for g in optimizer.param_groups)


def test_adamw_leaves_names_with_norm_undecayed(tiny_cfg):
    class Named(nn.Module):
        def __init__(self):
            super().__init__()
            self.norm_proj, self.proj = nn.Linear(3, 3), nn.Linear(3, 3)
    model = Named()
    optimizer = build_optimizer(model, tiny_cfg("TRAIN.optimizer", "adamw", "TRAIN.head_lr_mult", "1.0"))
    assert [len(g["params"]) for g in optimizer.param_groups] == [1, 3]
    assert optimizer.param_groups[0]["params"][0] is model.proj.weight


def test_adamw_refuses_a_head_learning_rate(tiny_cfg):
    model, cfg = tiny_model_cfg(tiny_cfg, "TRAIN.optimizer", "adamw")
    with pytest.raises(UserError, match="TRAIN.head_lr_mult 1.0"):
        build_optimizer(model, cfg)


def learning_rates(tiny_cfg, iterations, max_iter, *overrides):
    model, cfg = tiny_model_cfg(tiny_cfg, *overrides)
    optimizer = build_optimizer(model, cfg)
    scheduler = build_scheduler(optimizer, cfg, max_iter)
    rates = []
    for _ in range(iterations):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    return rates


def test_warmup_poly_by_hand(tiny_cfg):
    # 4 epochs of 5 iterations, 1 warm-up epoch: W = 5; ratio 0.1, power 0.5, base lr 2
    rates = learning_rates(tiny_cfg, 20, 20, "TRAIN.epochs", "4", "TRAIN.scheduler", "warmup-poly",
                           "TRAIN.optimizer", "adamw", "TRAIN.head_lr_mult", "1.0", "TRAIN.base_lr", "2.0",
                           "TRAIN.warmup_epochs", "1", "TRAIN.warmup_ratio", "0.1", "TRAIN.power", "0.5")
    hand = [2 * (0.1 + 0.9 * i / 5) for i in range(5)] + [2 * (1 - (i - 5) / 15) ** 0.5 for i in range(5, 20)]
    assert [r[0] for r in rates] == pytest.approx(hand, rel=1e-12)
    assert rates[0][0] == pytest.approx(0.2) and rates[5][0] == pytest.approx(2.0)
    assert rates[19][0] == pytest.approx(2 * (1 / 15) ** 0.5)
    assert all(r[0] == r[1] for r in rates)


def test_warmup_must_end_before_the_run(tiny_cfg):
    model, cfg = tiny_model_cfg(tiny_cfg, "TRAIN.scheduler", "warmup-poly", "TRAIN.warmup_epochs", "1")
    with pytest.raises(UserError, match=r"TRAIN.warmup_epochs must be in \[0, TRAIN.epochs\)"):
        build_scheduler(build_optimizer(model, cfg), cfg, 10)


def test_poly_sea_by_hand(tiny_cfg):
    # SEA's PSPNet: iteration 0 at the base rate on every group, iteration i at poly(i - 1), heads x10
    rates = learning_rates(tiny_cfg, 10, 10, "TRAIN.scheduler", "poly-sea", "TRAIN.base_lr", "0.5",
                           "TRAIN.power", "0.9")
    assert rates[0] == pytest.approx([0.5, 0.5])
    for i in range(1, 10):
        poly = 0.5 * (1 - (i - 1) / 10) ** 0.9
        assert rates[i] == pytest.approx([poly, 10 * poly], rel=1e-12)


def test_recipe_pirat_attacks_every_image(tiny_cfg):
    model = TinySeg()
    cfg = tiny_cfg("ADV_TRAIN.method", "pirat", "ADV_TRAIN.adv_ratio", "1.0",
                   "ADV_TRAIN.attack", "{name: pirat-pgd, eps: 0.05, alpha: 0.02, steps: 3}")
    recipe = RECIPES.get("pirat")(cfg, model)
    assert recipe.attack.name == "pirat-pgd" and recipe.attack.eps == 0.05
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 24, 24, generator=g), torch.randint(0, 7, (4, 24, 24), generator=g)
    images, labels, n_adv = recipe.batch(x, y)
    assert n_adv == 4 and labels is y
    moved = (images - x).abs().flatten(1).amax(1)
    assert (moved > 0).all() and moved.max() <= 0.05 + 1e-6, "every image attacked, within eps"
    assert "all 4 images" in recipe.describe(4)


def test_recipe_pirat_needs_the_whole_batch(tiny_cfg):
    with pytest.raises(UserError, match="ADV_TRAIN.adv_ratio 1"):
        RECIPES.get("pirat")(tiny_cfg("ADV_TRAIN.method", "pirat"), TinySeg())


TWINS = [("config/voc2012/voc2012_pspnet50_pirat.yaml", "config/voc2012/voc2012_pspnet50_rpat.yaml"),
         ("config/demo/demo_pspnet18_pirat.yaml", "config/demo/demo_pspnet18_rpat.yaml")]


@pytest.mark.parametrize("pirat,rpat", TWINS)
def test_twin_configs_differ_only_in_the_training_attack(pirat, rpat):
    a = load_config(ROOT / pirat, ["MODEL.pretrained", ""]).to_dict()
    b = load_config(ROOT / rpat, ["MODEL.pretrained", ""]).to_dict()
    atk_a, atk_b = a["ADV_TRAIN"].pop("attack"), b["ADV_TRAIN"].pop("attack")
    assert a.pop("EXP")["name"] != b.pop("EXP")["name"], "each run its own folder"
    assert a == b
    assert atk_a["name"] == "pirat-pgd" and atk_b["name"] == "rppgd++" and atk_b["random_start"] is False
    assert all(atk_a[k] == atk_b[k] for k in ("eps", "alpha", "steps")), "the same budget"
    for config in (pirat, rpat):
        cfg = load_config(ROOT / config, ["MODEL.pretrained", ""])
        model = build_model(cfg)
        recipe = RECIPES.get(cfg.ADV_TRAIN.method)(cfg, model)
        assert recipe.name == "pirat" and recipe.attack.eps == atk_a["eps"]
        build_scheduler(build_optimizer(model, cfg), cfg, 100)


def test_voc_pspnet_pirat_is_seas_voc_pspnet_cais():
    cfg = load_config(ROOT / "config/voc2012/voc2012_pspnet50_pirat.yaml", ["MODEL.pretrained", ""])
    t = cfg.TRAIN
    assert cfg.ADV_TRAIN.attack == {"name": "pirat-pgd", "eps": 4 / 255, "alpha": 0.01, "steps": 5}
    assert cfg.ADV_TRAIN.iterate_grads and cfg.ADV_TRAIN.adv_ratio == 1
    assert (t.optimizer, t.scheduler, t.base_lr, t.head_lr_mult, t.momentum, t.weight_decay, t.power) == \
        ("sgd", "poly-sea", 0.0004, 10.0, 0.9, 0.0001, 0.9)
    assert (t.epochs, t.batch_size, t.crop_size, t.aux_weight, t.rotate_prob, t.amp) == \
        (50, 16, [473, 473], 0.4, 0.0, "none")
    assert (cfg.MODEL.arch, cfg.MODEL.style, cfg.MODEL.layers, cfg.MODEL.deep_stem) == ("pspnet", "semseg", 50, False)
    assert cfg.DATA.mean == [0, 0, 0] and cfg.DATA.std == [1, 1, 1] and cfg.DIST.sync_bn == "false"
    assert cfg.ATTACK.protocol == "center" and cfg.TEST.crop_size == [473, 473]
    assert {"name": "sea", "eps": 4 / 255, "steps": 300} in cfg.ATTACK.attacks


def test_iterate_grads_adds_the_eval_cross_entropy_at_every_iterate(tiny_cfg):
    """SEA's loop leaves its attack's parameter gradients in place: the step's gradient is the training loss's plus, for
    each iterate x_0..x_{T-1} of the attack, the gradient of the eval-mode batch-mean CE there."""
    cfg = tiny_cfg("ADV_TRAIN.method", "pirat", "ADV_TRAIN.adv_ratio", "1.0", "ADV_TRAIN.iterate_grads", "true",
                   "ADV_TRAIN.attack", "{name: pirat-pgd, eps: 0.05, alpha: 0.02, steps: 3}", "TRAIN.aux_weight", "0.4")
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # non-trivial running statistics, so eval and train mode differ
        model.train()
        model(torch.rand(4, 3, 24, 24))
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 3, 24, 24, generator=g), torch.randint(0, 7, (2, 24, 24), generator=g)
    y[:, :3] = 255
    params = [p for p in model.parameters()]
    reference = {k: v.clone() for k, v in model.state_dict().items()}

    # by hand: the attack's iterates (inputs it took a gradient at), then the gradients of the eval CE at each
    iterates = []
    hook = model.register_forward_pre_hook(lambda m, args: iterates.append(args[0].detach())
                                           if args[0].requires_grad else None)
    adv = build_attack("pirat-pgd", model, eps=0.05, alpha=0.02, steps=3)(x, y)
    hook.remove()
    assert len(iterates) == 3 and torch.equal(iterates[0], x)
    model.eval()
    expected = [torch.zeros_like(p) for p in params]
    for it in iterates:
        for e, d in zip(expected, torch.autograd.grad(segmentation_loss(model(it), y, 255), params,
                                                      allow_unused=True)):
            e += 0 if d is None else d
    model.train()
    torch.manual_seed(5)  # the same dropout masks by hand and in the step (neither the attack nor eval mode draws)
    out = model(adv, return_dict=True)
    train = segmentation_loss(out["out"], y, 255) + 0.4 * segmentation_loss(out["aux"], y, 255)
    for e, d in zip(expected, torch.autograd.grad(train, params)):
        e += d
    model.load_state_dict(reference)  # the training forward above moved the BN statistics

    class Capture(torch.optim.SGD):
        def step(self, closure=None):
            self.seen = [p.grad.clone() for p in params]
    optimizer = Capture(params, lr=0.0)
    recipe = RECIPES.get("pirat")(cfg, model)
    assert "ADV_TRAIN.iterate_grads" in recipe.describe(2)
    model.train()
    torch.manual_seed(5)
    recipe.step(model, x, y, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0))
    assert model.training and all(m.training for m in model.modules())
    worst = max(float((a - b).abs().max()) for a, b in zip(optimizer.seen, expected))
    assert worst < 1e-5, worst
    without = RECIPES.get("pirat")(tiny_cfg("ADV_TRAIN.method", "pirat", "ADV_TRAIN.adv_ratio", "1.0",
                                            "ADV_TRAIN.attack", "{name: pirat-pgd, eps: 0.05, alpha: 0.02, steps: 3}"),
                                   model)
    model.load_state_dict(reference)
    torch.manual_seed(5)
    without.step(model, x, y, optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda it: 1.0))
    assert max(float((a - b).abs().max()) for a, b in zip(optimizer.seen, expected)) > 1e-3


@pytest.mark.parametrize("method", ["at", "release", "none"])
def test_iterate_grads_is_pirats_only(tiny_cfg, method):
    with pytest.raises(UserError, match="ADV_TRAIN.iterate_grads is PIR-AT's"):
        RECIPES.get(method)(tiny_cfg("ADV_TRAIN.method", method, "ADV_TRAIN.iterate_grads", "true"), TinySeg())


def test_pirat_pgd_trace_judges_every_iterate_and_changes_nothing():
    torch.manual_seed(0)
    model = TinySeg().eval()
    g = torch.Generator().manual_seed(2)
    x, y = torch.rand(2, 3, 21, 19, generator=g), torch.randint(0, 7, (2, 21, 19), generator=g)
    atk = build_attack("pirat-pgd", model, eps=0.03, alpha=0.01, steps=4)
    result = atk.run(x, y)
    assert [r.step for r in result.trace] == [0, 1, 2, 3, 4] and all(0 <= r.pixel_acc <= 1 for r in result.trace)
    assert torch.equal(result.adv, atk(x, y)), "tracing does not change the result"
    losses = [r.loss for r in result.trace[:4]]  # the losses the choice saw (x_4's is only traced)
    best = max(i for i, v in enumerate(losses) if v == max(losses))
    assert int(result.extras["selected"]) == best + 1


@pytest.mark.parametrize("name,params", [("pirat-pgd", {}), ("rppgd++", {"random_start": False})])
def test_the_recorder_keeps_each_iterate_the_attack_took_a_gradient_at(name, params):
    """ADV_TRAIN.iterate_grads with either twin's attack: T iterates, x_0 the clean image, traced or not."""
    from engine.recipes.pirat import IterateRecorder
    torch.manual_seed(0)
    recorder = IterateRecorder(TinySeg())
    g = torch.Generator().manual_seed(3)
    x, y = torch.rand(2, 3, 20, 20, generator=g), torch.randint(0, 7, (2, 20, 20), generator=g)
    atk = build_attack(name, recorder, eps=0.1, alpha=0.04, steps=3, **params)
    for trace in (False, True):
        recorder.iterates.clear()
        atk.run(x, y, trace=trace)
        assert len(recorder.iterates) == 3 and torch.equal(recorder.iterates[0], x)
        assert all((it - x).abs().max() <= 0.1 + 1e-6 for it in recorder.iterates)


@pytest.mark.parametrize("method,overrides,passes", [
    ("at", ["ADV_TRAIN.adv_ratio", "0.5"], 1.5),                          # 3 steps on half the batch
    ("release", ["ADV_TRAIN.adv_ratio", "0.5"], 3.0),                     # the whole batch attacked, half kept
    ("pirat", ["ADV_TRAIN.adv_ratio", "1.0"], 3.0),
    ("pirat", ["ADV_TRAIN.adv_ratio", "1.0", "ADV_TRAIN.iterate_grads", "true"], 6.0),  # a fwd+bwd per iterate more
])
def test_a_recipes_attack_passes_are_those_its_batch_makes(tiny_cfg, method, overrides, passes):
    """Recipe.attack_passes (the benchmark scales its AT target by it) against the backward passes per training image
    that batch() makes through the model, counted."""
    model = TinySeg()
    cfg = tiny_cfg("ADV_TRAIN.method", method, *overrides,
                   "ADV_TRAIN.attack", "{name: pirat-pgd, eps: 0.05, alpha: 0.02, steps: 3}")
    recipe = RECIPES.get(method)(cfg, model)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(4, 3, 24, 24, generator=g), torch.randint(0, 7, (4, 24, 24), generator=g)
    with PassCounter(model) as counter:
        recipe.batch(x, y)
    assert recipe.attack_passes() == passes == counter.backward_samples / len(x)
