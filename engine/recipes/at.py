"""Adversarial training (ADV_TRAIN.method at, docs/method.md §6): the first round(adv_ratio x per-process batch)
images of every batch (half up, at least one) are replaced by adversarial examples of ADV_TRAIN.attack, made for
those images only (the release attacked the whole batch and threw half away)."""
from __future__ import annotations

import math

import torch
from torch import nn

from attack import Attack
from engine.attacks import attack_spec, build_from_spec
from engine.recipes.base import RECIPES, Recipe


def adversarial_count(batch: int, ratio: float) -> int:
    """How many images of a per-process batch are replaced: ratio x batch rounded half up, at least one."""
    return min(batch, max(1, math.floor(ratio * batch + 0.5)))


@RECIPES.register("at")
class AdversarialTraining(Recipe):
    """`attack` defaults to ADV_TRAIN.attack built on `model` (the unwrapped model); ADV_TRAIN.adv_ratio of each
    batch is replaced."""

    name = "at"

    def __init__(self, cfg, model: nn.Module, attack: Attack | None = None) -> None:
        super().__init__(cfg, model)
        self.attack = attack or build_from_spec(attack_spec(cfg.ADV_TRAIN.attack, "ADV_TRAIN.attack"), model, cfg)
        self.ratio = cfg.ADV_TRAIN.adv_ratio

    def batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        n_adv = adversarial_count(len(images), self.ratio)
        adv = self.attack(images[:n_adv], labels[:n_adv])
        return torch.cat([adv, images[n_adv:]]), labels, n_adv

    def attack_passes(self) -> float:
        """The attack's backward passes for the adv_ratio of the batch it replaces."""
        return self.ratio * self.attack.expected_passes(1)[1]

    def describe(self, per_process: int) -> str:
        return (f"adversarial training: {adversarial_count(per_process, self.ratio)} of {per_process} images per "
                f"process and step replaced by {self.attack!r}")
