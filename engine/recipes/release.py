"""The RP-PGD release's composition (ADV_TRAIN.method release, docs/method.md §4 point 8): the whole per-process batch
is attacked, and the adversarial versions of its second half are kept beside the clean first half. With batch-pooled
attack terms a kept image then depends on the discarded ones. Needs ADV_TRAIN.adv_ratio 0.5."""
from __future__ import annotations

import torch
from torch import nn

from attack import Attack
from engine.recipes.at import AdversarialTraining
from engine.recipes.base import RECIPES
from util.errors import UserError


@RECIPES.register("release")
class ReleaseComposition(AdversarialTraining):
    name = "release"

    def __init__(self, cfg, model: nn.Module, attack: Attack | None = None) -> None:
        if cfg.ADV_TRAIN.adv_ratio != 0.5:
            raise UserError(f"ADV_TRAIN.method release keeps the adversarial second half of the batch: it needs "
                            f"ADV_TRAIN.adv_ratio 0.5, got {cfg.ADV_TRAIN.adv_ratio}")
        super().__init__(cfg, model, attack)

    def batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        half = len(images) // 2
        adv = self.attack(images, labels)
        return torch.cat([adv[half:], images[:half]]), torch.cat([labels[half:], labels[:half]]), len(images) - half

    def attack_passes(self) -> float:
        """The whole batch is attacked, though half of it is kept."""
        return float(self.attack.expected_passes(1)[1])

    def describe(self, per_process: int) -> str:
        return (f"adversarial training, the release's composition: all {per_process} images per process and step "
                f"attacked by {self.attack!r}, the adversarial second half kept")
