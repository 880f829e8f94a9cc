"""SEA, the Segmentation Ensemble Attack (Croce et al., ECCV 2024), METHOD.md §5 (the dataset-level worst case
over several attacks is in attack/worst_case.py).

One APGD run per loss (default MCE, MCE-Bal, JS), each split into stages of 30%/30%/40% of `steps` at radii
2eps, 1.5eps, eps; a stage starts from the projection of the previous stage's lowest-accuracy point onto its
own ball. Per image the loss whose result has the lowest pixel accuracy wins.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from attack.apgd import APGD, LOSSES
from attack.base import Attack, AttackResult, RandomSource, Recorder, check_choice, keep_best, project, uniform_start

RADII = (2.0, 1.5, 1.0)
FRACTIONS = (0.3, 0.3, 0.4)


def stage_steps(steps: int) -> list[int]:
    """Steps of the three stages: 30%, 30% and the rest (each at least 1)."""
    first = [max(1, round(f * steps)) for f in FRACTIONS[:-1]]
    return first + [steps - sum(first)]


class SEA(Attack):
    name = "sea"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 300,
                 losses: Sequence[str] = ("mce", "mce-bal", "js"), random_start: bool = True,
                 class_counts: Sequence[float] | None = None, class_weights: Sequence[float] | None = None,
                 seed: int | None = None, ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, alpha=None, steps=steps, random_start=random_start, seed=seed,
                         ignore_index=ignore_index, best=True)
        if steps < len(RADII) + 2:
            raise ValueError(f"steps must be >= {len(RADII) + 2} for SEA's three stages; got {steps}")
        if not losses:
            raise ValueError(f"losses must name at least one of {', '.join(LOSSES)}")
        for loss in losses:
            check_choice("losses", loss, LOSSES)
        self.losses = tuple(losses)
        self.class_counts = None if class_counts is None else torch.as_tensor(class_counts).tolist()
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights).tolist()
        self.runs = [APGD(model, eps=eps, steps=steps, loss=loss, random_start=random_start,
                          class_counts=class_counts if loss == "mce-bal" else None,
                          class_weights=class_weights if loss == "mce-bal" else None, seed=seed,
                          ignore_index=ignore_index) for loss in self.losses]

    def stages(self) -> list[dict]:
        """Each stage's radius and steps (the same for every loss)."""
        return [{"radius": r * self.eps, "steps": s} for r, s in zip(RADII, stage_steps(self.steps))]

    def _attack(self, x_nat: torch.Tensor, labels: torch.Tensor, records: Recorder,
                random: Callable[[], RandomSource]) -> AttackResult:
        best_x, best_acc = None, None
        for run in self.runs:
            # the first stage starts from a random point of its own (larger) ball
            x = uniform_start(x_nat, RADII[0] * self.eps, random()) if self.random_start \
                else x_nat.clone()
            for radius, steps in zip(RADII, stage_steps(self.steps)):
                r = radius * self.eps
                x, acc = run.optimise(x_nat, project(x, x_nat, r, "linf"), labels, r, steps, records,
                                      stage=f"{run.loss}@{radius:g}eps")
            if best_x is None:
                best_x, best_acc = x, acc
            else:
                best_x, best_acc = keep_best(best_x, best_acc, x, acc)
        return AttackResult(adv=best_x)
