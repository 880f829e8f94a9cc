"""SegPGD (Gu et al., ECCV 2022), docs/method.md §2: CE re-weighted from correct toward wrong pixels over the steps.

L_t = [(1 - lambda_t) * sum_{correct} CE_p + lambda_t * sum_{wrong} CE_p] / |V|, lambda_t = (t-1)/(2T), with
"correct" judged on the current iterate. Divided by the valid pixels |V| of each image (the `cospgd`
package divides by H*W including ignored pixels).
"""
from __future__ import annotations

import torch
from torch import nn

from attack.base import Attack
from attack.losses import masked_mean, segpgd_map, valid_mask


class SegPGD(Attack):
    name = "segpgd"
    norms = ("linf", "l2")

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 10,
                 random_start: bool = True, norm: str = "linf", seed: int | None = None, ignore_index: int = 255,
                 best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, norm=norm, seed=seed,
                         ignore_index=ignore_index, best=best)

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        loss = segpgd_map(self.logits_of(out), labels, step, self.steps, self.ignore_index)
        return masked_mean(loss, valid_mask(labels, self.ignore_index))
