"""Mixed precision and memory layout: channels_last changes nothing but speed, a bf16 attack keeps its eps ball and
range and stays close to fp32, fp16 without CUDA is refused by name, and an attack making extra passes is caught."""
from __future__ import annotations

import pytest
import torch

from attack import PGD, build_attack
from engine.optim import build_optimizer, build_scheduler
from engine.passes import PassCounter, check_passes
from engine.precision import autocast, check_amp, grad_scaler
from engine.protocols import build_protocol
from engine.recipes import AdversarialTraining
from model import build_model
from util.errors import UserError


def batch(n=2, size=41, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 7, (n, size, size), generator=g)
    y[:, :4] = 255
    return torch.rand(n, 3, size, size, generator=g), y


def models(tiny_cfg):
    """The same random weights in both layouts, BatchNorm statistics non-trivial and its biases shifted so that most
    units are active: otherwise a random network's input gradient is chaotic and float noise alone flips its signs."""
    torch.manual_seed(0)
    plain = build_model(tiny_cfg())
    with torch.no_grad():
        for m in plain.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_var.uniform_(0.5, 1.5)
                m.running_mean.normal_(0, 0.1)
                m.bias.uniform_(0.1, 0.3)
    last = build_model(tiny_cfg("MODEL.channels_last", "true"))
    last.load_state_dict(plain.state_dict())
    return plain.eval(), last.eval()


def test_channels_last_changes_nothing_but_the_layout(tiny_cfg):
    plain, last = models(tiny_cfg)
    assert last.backbone.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    x, y = batch()
    with torch.no_grad():
        a, b = plain(x), last(x)
    assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    grads = []
    for model in (plain, last):
        xg = x.clone().requires_grad_(True)
        loss = torch.nn.functional.cross_entropy(model(xg), y, ignore_index=255)
        grads.append(torch.autograd.grad(loss, xg)[0])
    assert torch.allclose(grads[0], grads[1], atol=1e-4 * float(grads[0].abs().max()), rtol=1e-3)
    for name in ("pgd", "rppgd++"):
        adv_a = build_attack(name, plain, eps=0.03, alpha=0.01, steps=3, seed=0)(x, y)
        adv_b = build_attack(name, last, eps=0.03, alpha=0.01, steps=3, seed=0)(x, y)
        # the sign of a gradient entry that is ~0 may flip with the float reordering, and the iterates part from
        # there: at most 2% of the entries differ (measured: 0-0.8%, none with 2 threads)
        assert ((adv_a - adv_b).abs() > 1e-6).float().mean() < 0.02, name


def test_a_bf16_attack_keeps_the_ball_and_stays_close_to_fp32(tiny_cfg):
    model = models(tiny_cfg)[0]
    x, y = batch(seed=1)
    atk = build_attack("pgd", model, eps=0.03, alpha=0.01, steps=5, seed=0)
    fp32 = atk(x, y)
    with autocast("bf16", "cpu"):
        bf16 = atk(x, y)
    assert bf16.dtype == torch.float32, "the perturbation stays fp32"
    assert (bf16 - x).abs().max() <= 0.03 + 1e-7 and bf16.min() >= 0 and bf16.max() <= 1
    # bf16 keeps 8 bits of mantissa: the signs of small gradient entries differ, the rest of the perturbation
    # agrees. Here (measured: 20-25% of the entries differ, by 0.11-0.14 eps on average) the test allows at most a
    # third of the entries and a mean difference of a quarter of the radius.
    differ = ((bf16 - fp32).abs() > 1e-6).float().mean()
    assert 0 < differ < 1 / 3
    assert (bf16 - fp32).abs().mean() < 0.25 * 0.03
    with torch.no_grad():
        loss = [torch.nn.functional.cross_entropy(model(a), y, ignore_index=255) for a in (x, fp32, bf16)]
    assert loss[2] > loss[0] + 0.5 * (loss[1] - loss[0]), "the bf16 attack raises the loss about as much"


def test_fp16_without_cuda_is_refused_by_name(tiny_cfg):
    with pytest.raises(UserError, match="TRAIN.amp fp16 needs CUDA"):
        check_amp("fp16", torch.device("cpu"), "TRAIN.amp")
    with pytest.raises(UserError, match="TRAIN.amp fp16 needs CUDA"):
        grad_scaler("fp16", "cpu")
    with pytest.raises(UserError, match="ATTACK.amp must be one of none, bf16, fp16"):
        check_amp("fp8", torch.device("cpu"), "ATTACK.amp")
    with pytest.raises(UserError, match="ATTACK.amp must be one of"):
        tiny_cfg("ATTACK.amp", "fp8")
    check_amp("bf16", torch.device("cpu"), "ATTACK.amp")
    assert grad_scaler("bf16", "cpu") is None and grad_scaler("none", "cpu") is None


def test_the_protocol_attacks_under_attack_amp(tiny_cfg):
    """ATTACK.amp bf16: the attack's passes run in bf16 (a different result), the scored logits in fp32."""
    model = models(tiny_cfg)[0]
    x, y = batch(seed=2)
    spec_cfg = tiny_cfg()
    from engine.attacks import AttackSpec
    spec = AttackSpec("pgd", "pgd", {"eps": 0.03, "alpha": 0.01, "steps": 3}, "test")
    fp32 = build_protocol(tiny_cfg(), model)
    bf16 = build_protocol(tiny_cfg("ATTACK.amp", "bf16"), model)
    a = fp32.predict(x, y, [0, 1], fp32.build_attack(spec, spec_cfg))
    b = bf16.predict(x, y, [0, 1], bf16.build_attack(spec, spec_cfg))
    assert a.logits.dtype == b.logits.dtype == torch.float32
    assert not torch.equal(a.adv, b.adv) and (b.adv - x).abs().max() <= 0.03 + 1e-7
    assert bf16.describe()["attack_amp"] == "bf16"


class DoubleForward(PGD):
    """A PGD whose step does extra work: a second forward pass for its loss."""

    def objective(self, out, labels, step, state):
        self.model(torch.zeros(1, 3, 8, 8))
        return super().objective(out, labels, step, state)


def test_the_pass_counter_catches_an_extra_pass(tiny_cfg):
    model = models(tiny_cfg)[0]
    x, y = batch()
    honest, extra = PGD(model, steps=2), DoubleForward(model, steps=2)
    assert honest.expected_passes(len(x)) == extra.expected_passes(len(x)) == (2, 2)
    with PassCounter(model) as counter:
        honest(x, y)
    check_passes(honest, counter, len(x))
    with PassCounter(model) as counter:
        extra(x, y)
    with pytest.raises(RuntimeError, match=r"pgd: one call made 4 forward and 2 backward .* needs 2 and 2"):
        check_passes(extra, counter, len(x))


def test_a_bf16_training_step_trains_and_repeats(tiny_cfg):
    """A bf16 AT step on the CPU: finite losses, weights that change, and the same result when repeated from the
    same state (the resume of a bf16 run is exact: tests/test_end_to_end.py)."""
    cfg = tiny_cfg("TRAIN.amp", "bf16")
    x, y = batch(4, 41, seed=3)
    results = []
    for _ in range(2):
        torch.manual_seed(0)
        net = build_model(cfg).train()
        optimizer = build_optimizer(net, cfg)
        scheduler = build_scheduler(optimizer, cfg, 10)
        attack = build_attack("rppgd++", net, eps=0.03, alpha=0.01, steps=2, seed=0)
        before = {k: v.detach().clone() for k, v in net.state_dict().items()}
        step = AdversarialTraining(cfg, net, attack).step(net, x, y, optimizer, scheduler)
        assert torch.isfinite(step.main_loss) and step.n_adv == 2
        results.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        assert not torch.equal(before["head.5.weight"], results[-1]["head.5.weight"]), "the step trains"
    assert all(torch.equal(results[0][k], results[1][k]) for k in results[0])
