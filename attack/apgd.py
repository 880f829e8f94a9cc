"""APGD (Croce & Hein, ICML 2020) for segmentation with the losses of SEA (Croce et al., ECCV 2024), METHOD.md §5.

L-inf only. The step size starts at 2*eps per image; each update is a signed step followed by momentum 0.75
(x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1})), z = P(x_k + eta sign(grad))). At the checkpoints
(`apgd_checkpoints`) an image's step size is halved and its iterate reset to its highest-loss point when fewer
than 75% of the steps since the last checkpoint raised its loss, or when neither its step size nor its best
loss changed since the last checkpoint (not tested at the first checkpoint, as in AutoAttack). The result is
each image's iterate with the lowest pixel accuracy.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import nn

from attack.base import Attack, AttackResult, RandomSource, Recorder, check_choice, keep_best, project
from attack.losses import ce_map, class_weights_from_counts, js_map, masked_mean, mce_bal_map, mce_map, valid_mask

LOSSES = ("ce", "mce", "mce-bal", "js")
MOMENTUM = 0.75
RHO = 0.75  # fraction of steps that must raise the loss between checkpoints


def checkpoint_fractions() -> list[float]:
    """p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06), up to 1."""
    p = [0.0, 0.22]
    while p[-1] + max(p[-1] - p[-2] - 0.03, 0.06) <= 1.0:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    return p


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations ceil(p_j * steps), j >= 1, after which the step-size rule is checked."""
    return sorted({min(steps, math.ceil(round(p * steps, 9))) for p in checkpoint_fractions()[1:]} - {0})


def mce_bal_weights(loss: str, class_counts: Sequence[float] | None, class_weights: Sequence[float] | None
                    ) -> torch.Tensor | None:
    """MCE-Bal's class weights (K,) from the counts or as given; None for the other losses."""
    if class_counts is not None and class_weights is not None:
        raise ValueError("give class_counts or class_weights, not both")
    if loss != "mce-bal":
        if class_counts is not None or class_weights is not None:
            raise ValueError(f"class_counts and class_weights only apply to loss 'mce-bal', not {loss!r}")
        return None
    if class_counts is not None:
        return class_weights_from_counts(class_counts)
    if class_weights is not None:
        return torch.as_tensor(class_weights, dtype=torch.float32)
    raise ValueError("loss 'mce-bal' needs class_counts (the training set's pixel count per class, see "
                     "util.class_counts) or class_weights")


class APGD(Attack):
    """APGD with loss `ce`, `mce`, `mce-bal` (needs class_counts or class_weights) or `js`."""

    name = "apgd"
    fixed_by_name = ("loss",)  # the registry names apgd-ce, apgd-mce, ... fix it

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, loss: str = "ce",
                 random_start: bool = True, class_counts: Sequence[float] | None = None,
                 class_weights: Sequence[float] | None = None, seed: int | None = None, ignore_index: int = 255
                 ) -> None:
        super().__init__(model, eps=eps, alpha=None, steps=steps, random_start=random_start, seed=seed,
                         ignore_index=ignore_index, best=True)
        check_choice("loss", loss, LOSSES)
        self.loss = loss
        self.weights = mce_bal_weights(loss, class_counts, class_weights)  # (K,) or None
        self.class_counts = None if class_counts is None else torch.as_tensor(class_counts).tolist()
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights).tolist()
        self.name = f"apgd-{loss}"

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        logits = self.logits_of(out)
        if self.loss == "ce":
            loss = ce_map(logits, labels, self.ignore_index)
        elif self.loss == "mce":
            loss = mce_map(logits, labels, self.ignore_index)
        elif self.loss == "mce-bal":
            loss = mce_bal_map(logits, labels, self.ignore_index, self.weights)
        else:
            loss = js_map(logits, labels, self.ignore_index)
        return masked_mean(loss, valid_mask(labels, self.ignore_index))

    def step_extras(self, state: dict) -> dict:
        """The mean step size that produced the iterate and the stage (SEA's loss and radius) it belongs to."""
        return {"step_size": state["step_size"], "stage": state["stage"]}

    def _attack(self, x_nat: torch.Tensor, labels: torch.Tensor, records: Recorder,
                random: Callable[[], RandomSource]) -> AttackResult:
        x0 = self.start(x_nat, random())
        x, _ = self.optimise(x_nat, x0, labels, self.eps, self.steps, records)
        return AttackResult(adv=x)

    def optimise(self, x_nat: torch.Tensor, x0: torch.Tensor, labels: torch.Tensor, radius: float, steps: int,
                 records: Recorder, stage: str = "") -> tuple[torch.Tensor, torch.Tensor]:
        """Run APGD from x0 inside the L-inf ball of `radius`; returns each image's lowest-accuracy iterate and
        its pixel accuracy (N,)."""
        n = x_nat.shape[0]
        marks = set(apgd_checkpoints(steps))
        eta = torch.full((n,), 2.0 * radius, dtype=x_nat.dtype, device=x_nat.device)
        state: dict = {"step_size": eta, "stage": stage}

        def judge(k: int, x: torch.Tensor):
            # the losses ignore the step index; k + 1 makes the label check run on the first pass only
            loss, grad, logits = self.loss_and_grad(x, labels, k + 1, state)
            acc = self.record(records, k, loss, logits, labels, state)
            return loss, grad, acc

        x = x0
        loss, grad, acc = judge(0, x)
        best_x, best_acc = keep_best(x, None, x, acc)
        best_loss, x_best_loss, grad_best = loss.clone(), x.clone(), grad.clone()
        x_prev = x
        loss_prev = loss
        increases = torch.zeros(n, device=x.device)
        last_mark, reduced_last = 0, torch.ones(n, dtype=torch.bool, device=x.device)
        best_loss_last = best_loss.clone()
        for k in range(steps):
            e = eta.view(-1, 1, 1, 1)
            z = project(x + e * grad.sign(), x_nat, radius, "linf")
            x_new = z if k == 0 else project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_prev), x_nat, radius,
                                             "linf")
            x_prev, x = x, x_new
            loss, grad, acc = judge(k + 1, x)
            best_x, best_acc = keep_best(best_x, best_acc, x, acc)
            increases += (loss > loss_prev).float()
            loss_prev = loss
            improved = loss > best_loss
            best_loss = torch.where(improved, loss, best_loss)
            x_best_loss = torch.where(improved.view(-1, 1, 1, 1), x, x_best_loss)
            grad_best = torch.where(improved.view(-1, 1, 1, 1), grad, grad_best)
            if k + 1 in marks:
                oscillating = increases < RHO * (k + 1 - last_mark)
                stalled = ~reduced_last & (best_loss <= best_loss_last)
                reduce = oscillating | stalled
                eta = torch.where(reduce, eta / 2, eta)
                state["step_size"] = eta
                r = reduce.view(-1, 1, 1, 1)
                x = torch.where(r, x_best_loss, x)
                x_prev = torch.where(r, x_best_loss, x_prev)
                grad = torch.where(r, grad_best, grad)
                reduced_last, best_loss_last = reduce, best_loss.clone()
                increases.zero_()
                last_mark = k + 1
        return best_x, best_acc
