"""Forward and backward passes counted with module hooks (engine.passes): what each attack and step costs."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TinySeg

from attack import build_attack
from engine.optim import build_optimizer, build_scheduler
from engine.passes import PassCounter
from engine.recipes import AdversarialTraining
from model import build_model


def batch(n=2, size=17):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 7, (n, size, size), generator=g)


@pytest.mark.parametrize("name,forward,backward", [
    ("pgd", 3, 3), ("segpgd", 3, 3), ("cospgd", 3, 3), ("rppgd", 3, 3), ("rppgd++", 3, 3),
    ("apgd-ce", 4, 3),  # APGD judges its start point, then each of its 3 steps; the last iterate needs no gradient
])
def test_an_attack_step_is_one_forward_and_one_backward(name, forward, backward):
    model = TinySeg().eval()
    x, y = batch()
    atk = build_attack(name, model, steps=3)
    with PassCounter(model) as passes:
        atk(x, y)
    assert (passes.forward, passes.backward) == (forward, backward)
    assert passes.forward_samples == 2 * forward
    with PassCounter(model) as traced:
        atk.run(x, y)
    extra = 0 if name.startswith("apgd") else 1  # a traced PGD-family run judges its last iterate too
    assert (traced.forward, traced.backward) == (forward + extra, backward)


def test_the_hooks_come_off_and_count_parameter_gradients(tiny_cfg):
    model = TinySeg().eval()
    x, y = batch()
    with PassCounter(model) as passes:
        with torch.no_grad():
            model(x)
    model(x)  # after the context: not counted
    assert (passes.forward, passes.backward) == (1, 0)

    cfg = tiny_cfg("ADV_TRAIN.adv_ratio", "0.5")
    net = build_model(cfg).train()
    optimizer = build_optimizer(net, cfg)
    scheduler = build_scheduler(optimizer, cfg, max_iter=10)
    attack = build_attack("pgd", net, eps=0.03, alpha=0.01, steps=2)
    x, y = batch(4, 33)
    with PassCounter(net) as step:
        AdversarialTraining(cfg, net, attack).step(net, x, y, optimizer, scheduler)
    assert (step.forward, step.backward) == (3, 3), "two attack steps on half the batch, then one training pass"
    assert step.forward_samples == 2 + 2 + 4
