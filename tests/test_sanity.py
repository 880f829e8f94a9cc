"""Sanity checks of an evaluation (engine/sanity.py), each on a model made to trip it, and none on a plain one."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tiny_models import TinySeg
from torch import nn

from conftest import ROOT
from engine.attacks import AttackSpec
from engine.evaluation import evaluate
from engine.protocols.full import Full
from engine.sanity import attack_above_clean_warnings
from util.config import load_config
from util.distributed import single_process

SETTINGS = {"mode": "whole", "crop": (16, 16), "stride_rate": 1.0, "mean": (0.5,) * 3, "base_size": 0}
ENV = single_process(torch.device("cpu"))


def loader(n=2, size=16):
    g = torch.Generator().manual_seed(0)
    return [(list(torch.rand(n, 3, size, size, generator=g)), list(torch.randint(0, 7, (n, size, size), generator=g)),
             list(range(10, 10 + n)))]


def clean_warnings(model):
    return evaluate(Full(model, SETTINGS), loader(), ENV, 7).warnings


def test_a_plain_model_passes():
    assert clean_warnings(TinySeg().eval()) == []


class StuckInTraining(TinySeg):
    def train(self, mode=True):  # ignores eval()
        return super().train(True)


def test_a_module_that_stays_in_train_mode():
    (w,) = [w for w in clean_warnings(StuckInTraining()) if "train mode" in w]
    assert "modules stay in train mode at evaluation" in w


class Probabilities(TinySeg):
    def forward(self, x, return_dict=False):
        return super().forward(x).softmax(1)


def test_probabilities_instead_of_logits():
    assert any("look like probabilities" in w for w in clean_warnings(Probabilities().eval()))


class Random(TinySeg):
    def forward(self, x, return_dict=False):
        return F.dropout(super().forward(x), 0.5, training=True)


def test_a_random_model():
    assert any("two forward passes of the same image differ" in w for w in clean_warnings(Random().eval()))


class Masked(nn.Module):
    """Image-independent logits for a batch's second image: its input gradient is zero (a masked gradient)."""

    def __init__(self):
        super().__init__()
        self.net = TinySeg()

    def forward(self, x):
        out = self.net(x)
        keep = torch.ones(x.shape[0], 1, 1, 1)
        if x.shape[0] > 1:
            keep[1] = 0
        return out * keep + out.detach() * (1 - keep)


def test_a_zero_input_gradient_for_a_whole_image():
    protocol = Full(Masked().eval(), SETTINGS)
    attack = protocol.build_attack(AttackSpec("pgd", "pgd", {"eps": 0.03, "alpha": 0.01, "steps": 2}),
                                   load_config(ROOT / "config/demo/demo_pspnet18.yaml"))
    metric = evaluate(protocol, loader(), ENV, 7, attack=attack, desc="pgd")
    assert metric.zero_gradient == [11]
    assert metric.warnings == [w for w in metric.warnings if "pgd: the input gradient was zero at every step for "
                               "dataset image(s) [11]" in w] and len(metric.warnings) == 1


def test_an_attack_above_the_clean_figure():
    assert attack_above_clean_warnings("pgd", 0.5, 0.6) == []
    (w,) = attack_above_clean_warnings("pgd", 0.61, 0.6)
    assert "pgd: mIoU under attack (0.6100) is above the clean mIoU (0.6000)" in w


def test_a_worst_case_over_different_budgets_is_flagged():
    from engine.sanity import mixed_eps_warnings
    assert mixed_eps_warnings({"pgd": 8 / 255, "sea": 8 / 255}) == []
    (warning,) = mixed_eps_warnings({"bim": 0.03, "sea": 8 / 255})
    assert "pools attacks of different eps (bim 0.03, sea 0.03137)" in warning
