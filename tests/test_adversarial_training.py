"""The adversarial part of a training step (docs/method.md §6), the recipes at and release: which images are attacked,
in which mode."""
from __future__ import annotations

import pytest
import torch
from tiny_models import TinySeg

from attack import build_attack
from engine.recipes import AdversarialTraining, ReleaseComposition, adversarial_count
from util.errors import UserError


@pytest.mark.parametrize("batch,ratio,expected", [(8, 0.5, 4), (8, 1.0, 8), (8, 0.25, 2), (3, 0.5, 2), (1, 0.5, 1),
                                                  (16, 0.3, 5), (4, 0.01, 1)])
def test_adversarial_count(batch, ratio, expected):
    assert adversarial_count(batch, ratio) == expected


def batch(n: int = 8, size: int = 24):
    g = torch.Generator().manual_seed(0)
    return torch.rand(n, 3, size, size, generator=g), torch.randint(0, 7, (n, size, size), generator=g)


@pytest.mark.parametrize("ratio", [0.5, 0.25, 1.0])
def test_only_the_configured_fraction_is_attacked_and_the_rest_is_untouched(tiny_cfg, ratio):
    model = TinySeg()
    x, y = batch()
    calls = []
    atk = build_attack("rppgd++", model, eps=0.03, alpha=0.01, steps=2)
    real_call = atk.run

    def spy(images, labels, **kw):
        calls.append(len(images))
        return real_call(images, labels, **kw)
    atk.run = spy
    mixed, labels, n_adv = AdversarialTraining(tiny_cfg("ADV_TRAIN.adv_ratio", str(ratio)), model, atk).batch(x, y)
    assert labels is y
    assert n_adv == adversarial_count(8, ratio) and calls == [n_adv], "only the used images are attacked"
    assert mixed.shape == x.shape
    assert torch.equal(mixed[n_adv:], x[n_adv:]), "the clean part is untouched"
    delta = (mixed[:n_adv] - x[:n_adv]).abs()
    assert delta.max() <= 0.03 + 1e-6 and (delta.flatten(1).max(1).values > 0).all(), "each adversarial image moved"


def test_the_attack_runs_in_eval_mode_and_leaves_bn_statistics_alone(tiny_cfg):
    model = TinySeg()
    model.train()
    with torch.no_grad():  # non-trivial running statistics
        model(torch.rand(4, 3, 24, 24))
    stats = {k: v.clone() for k, v in model.state_dict().items() if "running" in k or "num_batches" in k}
    modes = []
    hooks = [m.register_forward_pre_hook(lambda m, _: modes.append(m.training))
             for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.Dropout2d))]
    x, y = batch(4)
    AdversarialTraining(tiny_cfg(), model, build_attack("rppgd++", model, steps=3, alpha=0.01)).batch(x, y)
    for h in hooks:
        h.remove()
    assert modes and not any(modes), "BN and dropout saw eval mode during the attack"
    assert model.training and all(m.training for m in model.modules()), "train mode is back"
    for k, v in model.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), f"{k} changed during the attack"
    assert all(p.grad is None for p in model.parameters())


def test_the_release_composition_attacks_the_whole_batch_and_keeps_the_second_half(tiny_cfg):
    """docs/method.md §4 point 8: the whole batch is attacked with batch-pooled terms and the adversarial second half is
    kept (first in the returned batch, with its labels); a kept image then depends on the discarded first half,
    which the default composition never lets happen."""
    model = TinySeg().eval()
    x, y = batch(4)
    atk = build_attack("rppgd++", model, eps=0.03, alpha=0.01, steps=2, random_start=False, pool="batch")
    release, at = ReleaseComposition(tiny_cfg(), model, atk), AdversarialTraining(tiny_cfg(), model, atk)
    mixed, labels, n_adv = release.batch(x, y)
    assert n_adv == 2 and torch.equal(mixed[2:], x[:2]) and torch.equal(labels, torch.cat([y[2:], y[:2]]))
    assert torch.equal(mixed[:2], atk(x, y)[2:])
    other = x.clone()
    other[:2] = torch.rand(2, *x.shape[1:], generator=torch.Generator().manual_seed(9))  # another discarded half
    kept_other = release.batch(other, y)[0][:2]
    assert not torch.equal(kept_other, mixed[:2]), "the kept half depends on the discarded half"
    own = at.batch(x.flip(0), y.flip(0))[0][:2]  # the default: the attacked images alone
    assert torch.equal(own, atk(x.flip(0)[:2], y.flip(0)[:2]))


def test_the_release_composition_needs_half_a_batch(tiny_cfg):
    with pytest.raises(UserError, match="ADV_TRAIN.method release keeps .*adv_ratio 0.5, got 0.25"):
        ReleaseComposition(tiny_cfg("ADV_TRAIN.method", "release", "ADV_TRAIN.adv_ratio", "0.25"), TinySeg())
    with pytest.raises(UserError, match="ADV_TRAIN.composition is gone: .*ADV_TRAIN.method release"):
        tiny_cfg("ADV_TRAIN.composition", "release")
