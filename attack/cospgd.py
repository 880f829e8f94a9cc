"""CosPGD (Agnihotri et al., ICML 2024), docs/method.md §3: CE weighted by the detached cosine similarity between
the prediction's probability vector and the one-hot label (`weight="softmax"`, or `"sigmoid"` as in the
older arXiv version). Targeted: the weight is 1 - cos toward the target map and the step descends.
"""
from __future__ import annotations

import torch
from torch import nn

from attack.base import Attack, check_choice
from attack.losses import cospgd_map, masked_mean, valid_mask
from attack.pgd import TargetedMixin

WEIGHTS = ("softmax", "sigmoid")


class CosPGD(TargetedMixin, Attack):
    name = "cospgd"
    norms = ("linf", "l2")

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 10,
                 random_start: bool = True, norm: str = "linf", weight: str = "softmax", targeted: bool = False,
                 target_class: int | None = None, seed: int | None = None, ignore_index: int = 255,
                 best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, norm=norm, seed=seed,
                         ignore_index=ignore_index, best=best)
        check_choice("weight", weight, WEIGHTS)
        self.weight = weight
        self._init_target(targeted, target_class)

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        target = self.targets(labels)
        loss = cospgd_map(self.logits_of(out), target, self.ignore_index, self.weight, self.targeted)
        return masked_mean(loss, valid_mask(target, self.ignore_index))
