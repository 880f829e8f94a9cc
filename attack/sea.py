"""SEA, the Segmentation Ensemble Attack (Croce et al., ECCV 2024), docs/method.md §5, as the authors' code runs it
(`semseg/attacker.py`, `apgd_largereps`; the dataset-level worst case over its runs is in engine/worst_case.py).

One APGD run per loss (default MCE-Bal, MCE, JS, in the reference's order), each split into stages of int(0.3N),
int(0.3N) and the rest of the N steps at radii 2eps, 1.5eps, eps. A run's first stage starts from its own random
point of the 2eps ball (each loss draws its own); every later stage from the projection, onto its ball, of the
previous stage's lowest-accuracy iterate, and a run's result is its last stage's lowest-accuracy iterate. The
returned image is per image the run with the lowest pixel accuracy (earlier losses win ties); every run's result
is in `AttackResult.extras["runs"]` (loss -> images), for SEA's own dataset-level worst case.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from attack.apgd import APGD, LOSSES
from attack.ball import RandomSource, project, uniform_start
from attack.base import Attack, AttackResult, Recorder, check_choice, keep_best

RADII = (2.0, 1.5, 1.0)
MIN_STEPS = 4  # int(0.3 * 4) = 1: every stage makes at least one step


def stage_steps(steps: int) -> list[int]:
    """Steps of the three stages: int(0.3 N), int(0.3 N) and the rest."""
    first = [int(0.3 * steps)] * 2
    return first + [steps - sum(first)]


class SEA(Attack):
    name = "sea"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 300,
                 losses: Sequence[str] = ("mce-bal", "mce", "js"), track_loss: str = "ce", random_start: bool = True,
                 class_counts: Sequence[float] | None = None, class_weights: Sequence[float] | None = None,
                 seed: int | None = None, ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, alpha=None, steps=steps, random_start=random_start, seed=seed,
                         ignore_index=ignore_index, best=True)
        if steps < MIN_STEPS:
            raise ValueError(f"steps must be >= {MIN_STEPS} for SEA's three stages of int(0.3 N), int(0.3 N) and "
                             f"the rest; got {steps}")
        if not losses:
            raise ValueError(f"losses must name at least one of {', '.join(LOSSES)}")
        for loss in losses:
            check_choice("losses", loss, LOSSES)
        if len(set(losses)) != len(losses):
            raise ValueError(f"losses must not repeat a loss; got {list(losses)}")
        self.losses, self.track_loss = tuple(losses), track_loss
        self.class_counts = None if class_counts is None else torch.as_tensor(class_counts).tolist()
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights).tolist()
        balanced = ["mce-bal" in (loss, track_loss) for loss in self.losses]
        if not any(balanced) and (class_counts is not None or class_weights is not None):
            raise ValueError("class_counts and class_weights only apply to loss 'mce-bal', which neither losses "
                             "nor track_loss names")
        self.runs = [APGD(model, eps=eps, steps=steps, loss=loss, track_loss=track_loss, random_start=random_start,
                          class_counts=class_counts if bal else None, class_weights=class_weights if bal else None,
                          seed=seed, ignore_index=ignore_index) for loss, bal in zip(self.losses, balanced)]

    def run_names(self) -> list[str]:
        return list(self.losses)

    def expected_passes(self, images: int) -> tuple[int, int]:
        """APGD's passes for every stage of every loss run."""
        stages = [stage["steps"] for stage in self.stages()] * len(self.runs)
        return sum(s + 1 for s in stages), sum(stages)

    def stages(self) -> list[dict]:
        """Each stage's radius and steps (the same for every loss)."""
        return [{"radius": r * self.eps, "steps": s} for r, s in zip(RADII, stage_steps(self.steps))]

    def run_loss(self, run: APGD, x_nat: torch.Tensor, x0: torch.Tensor, labels: torch.Tensor, records: Recorder
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """One loss's staged APGD run from x0 (in the 2eps ball): its result and that result's pixel accuracy."""
        x = x0
        for stage in self.stages():
            x, acc = run.optimise(x_nat, project(x, x_nat, stage["radius"], "linf"), labels, stage["radius"],
                                  stage["steps"], records, stage=f"{run.loss}@{stage['radius'] / self.eps:g}eps")
        return x, acc

    def _attack(self, x_nat: torch.Tensor, labels: torch.Tensor, records: Recorder,
                random: Callable[[], RandomSource]) -> AttackResult:
        source = random()  # one source: each loss's start is a fresh draw from it
        best_x, best_acc, runs = None, None, {}
        for run in self.runs:
            x0 = uniform_start(x_nat, RADII[0] * self.eps, source) if self.random_start else x_nat.clone()
            runs[run.loss], acc = self.run_loss(run, x_nat, x0, labels, records)
            best_x, best_acc = keep_best(best_x, best_acc, runs[run.loss], acc)
        return AttackResult(adv=best_x, extras={"runs": runs})
