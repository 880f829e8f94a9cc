"""PIR-AT's training PGD (docs/method.md §10): `Pgd_Attack.adv_attack` of SEA's `semseg/val.py` with its default
`pgd` loss, as `tools/train_rob_seg.py` runs it during PIR-AT.

No random start, `steps` signed steps of `alpha` on the batch-mean cross-entropy, each clipped to [0,1] and then to
the eps ball, in the perturbation's own space as SEA's loop keeps it. The output is chosen for the whole batch at
once (the loss is one number for the batch), and it is not the best iterate but the one right after it:

- step t (0-based) evaluates L_t = CE(f(x_t)) at x_t = clip01(x + delta_t) and takes its gradient;
- if L_t >= the largest loss seen so far (starting from 0), delta_{t+1} (the update just computed from x_t) becomes
  the kept perturbation;
- the result is clip01(x + kept delta): x_{t*+1} for t* the last step where the batch loss reached its running
  maximum. The loss at the final iterate x_T is never evaluated.

Two points where SEA's code is not literally reproducible (docs/training.md, "The PIR-AT recipe, point by point"):

- As published, `running_best_loss[ind_pred] = loss[ind_pred]` indexes a 0-dim loss and raises "too many indices for
  tensor of dimension 0" in PyTorch (2.2, the version its requirements pin, and later). The batch-wide choice that
  its `>=` comparison of the scalar loss with every image's running best expresses is what is done here.
- SEA's loss is `F.cross_entropy(logits, y)` with the default ignore_index -100. Its datasets never produce an
  ignored pixel (SBD's .mat masks and ADE20k's 151 classes, padding with class 0), so -100 is never met; a 255
  there would be an out-of-range target and stop the run. Here ignore_index pixels (255) are left out of the batch
  mean, which equals SEA's loss whenever no pixel is ignored.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from attack.ball import RandomSource
from attack.base import Attack, AttackResult, Recorder
from attack.losses import valid_mask


class PIRATPGD(Attack):
    """SEA's training PGD: batch-mean CE, no random start, the iterate right after the highest batch loss."""

    name = "pirat-pgd"

    def __init__(self, model: nn.Module, eps: float = 4 / 255, alpha: float = 0.01, steps: int = 5,
                 ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=False, ignore_index=ignore_index)

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        """The batch-mean cross-entropy over valid pixels (a scalar; 0 when every pixel is ignored)."""
        logits = self.logits_of(out)
        total = F.cross_entropy(logits, labels, ignore_index=self.ignore_index, reduction="sum")
        return total / valid_mask(labels, self.ignore_index).sum().clamp(min=1)

    def _attack(self, x_nat: torch.Tensor, labels: torch.Tensor, records: Recorder,
                random: Callable[[], RandomSource]) -> AttackResult:
        state: dict = {}
        delta = torch.zeros_like(x_nat)
        kept = torch.zeros_like(x_nat)
        best = torch.zeros((), dtype=x_nat.dtype, device=x_nat.device)  # SEA's running best starts at 0
        selected = torch.zeros((), dtype=torch.long, device=x_nat.device)
        for t in range(self.steps):
            z = x_nat + delta
            loss, grad, logits = self.loss_and_grad(z.clamp(0.0, 1.0), labels, t + 1, state, records)
            # SEA differentiates through clamp(X + delta, 0, 1): 1 inside [0,1], bounds included (PyTorch 2.2's rule)
            grad = grad * ((z >= 0) & (z <= 1))
            if records.active:
                self.record(records, t, loss, logits, labels, state)
            better = loss >= best
            best = torch.where(better, loss, best)
            step = delta + self.alpha * grad.sign()
            delta = ((x_nat + step).clamp(0.0, 1.0) - x_nat).clamp(-self.eps, self.eps)
            kept = torch.where(better, delta, kept)
            selected = torch.where(better, torch.full_like(selected, t + 1), selected)
        if records.active:  # the trace also judges x_T, which the attack itself never evaluates
            final, logits = self.evaluate((x_nat + delta).clamp(0.0, 1.0), labels, self.steps, state)
            self.record(records, self.steps, final, logits, labels, state)
        # "selected": the step s of the returned iterate x_s (1..T), the same for every image
        return AttackResult(adv=(x_nat + kept).clamp(0.0, 1.0), extras={"selected": selected})
