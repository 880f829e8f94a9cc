"""APGD (Croce & Hein, ICML 2020) for segmentation with the losses of SEA (Croce et al., ECCV 2024), docs/method.md §5,
step for step as the SEA authors' code runs it (`semseg/attacker.py`, `apgd_train`).

L-inf only. The step size starts at 2*radius per image; each update is a signed step followed by momentum 0.75
(x_{k+1} = P(x_k + 0.75 (z - x_k) + 0.25 (x_k - x_{k-1})), z = P(x_k + eta sign(grad)); the first step is plain).
The gradient comes from the attack's loss; a separate *tracked* loss (`track_loss`, default plain CE averaged over
valid pixels, as SEA runs it) decides everything else. At the checkpoints (`apgd_checkpoints`: integer windows) an
image's step size is halved and its iterate reset to its highest-tracked-loss point when at most 75% of the steps
of the window raised the tracked loss, or when neither its step size nor its best tracked loss changed since the
last checkpoint (not tested at the first). The reset keeps the momentum (x_{k-1} stays the iterate before the
last step). Like the reference, the first window counts its first step as a rise when the tracked loss is
positive (its history starts at 0). The result is each image's lowest-pixel-accuracy iterate, ties going to the
later one; ignored pixels count at no iterate (the reference counts them wrong at the start and right later).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from attack.ball import RandomSource, project
from attack.base import Attack, AttackResult, Recorder, check_choice, keep_best
from attack.losses import (
    ce_map,
    class_weights_from_counts,
    js_map,
    masked_mean,
    mce_bal_map,
    mce_map,
    norm_corrlog_map,
    segpgd_map,
    valid_mask,
)

LOSSES = ("ce", "mce", "mce-bal", "js", "segpgd", "mask-norm-corrlog")
MOMENTUM = 0.75
RHO = 0.75  # a window halves the step unless more than this fraction of its steps raised the tracked loss


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations after which the step-size rule is checked, as AutoAttack's code counts them: a first window
    of max(int(0.22 N), 1) steps, each next one shorter by max(int(0.03 N), 1) but at least max(int(0.06 N), 1)."""
    window, shrink, shortest = max(int(0.22 * steps), 1), max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    marks = []
    while (marks[-1] if marks else 0) + window <= steps:
        marks.append((marks[-1] if marks else 0) + window)
        window = max(window - shrink, shortest)
    return marks


def mce_bal_weights(losses: Sequence[str], class_counts: Sequence[float] | None,
                    class_weights: Sequence[float] | None) -> torch.Tensor | None:
    """MCE-Bal's class weights (K,) from the counts or as given when one of `losses` is MCE-Bal; else None."""
    if class_counts is not None and class_weights is not None:
        raise ValueError("give class_counts or class_weights, not both")
    if "mce-bal" not in losses:
        if class_counts is not None or class_weights is not None:
            raise ValueError(f"class_counts and class_weights only apply to loss 'mce-bal', not {losses[0]!r}")
        return None
    if class_counts is not None:
        return class_weights_from_counts(class_counts)
    if class_weights is not None:
        return torch.as_tensor(class_weights, dtype=torch.float32)
    raise ValueError("loss 'mce-bal' needs class_counts (the training set's pixel count per class, see "
                     "util.data.class_counts) or class_weights")


def loss_map(loss: str, logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
             weights: torch.Tensor | None, k: int = 0, steps: int = 1) -> torch.Tensor:
    """The per-pixel map (N,H,W) of one of LOSSES at iterate k (0 the start) of a run of `steps` steps: only SegPGD's
    loss depends on them, through lambda = k / (2 steps) (SEA's code; segpgd_map counts from 1)."""
    if loss == "segpgd":
        return segpgd_map(logits, labels, k + 1, steps, ignore_index)
    if loss == "mask-norm-corrlog":
        return norm_corrlog_map(logits, labels, ignore_index)
    if loss == "ce":
        return ce_map(logits, labels, ignore_index)
    if loss == "mce":
        return mce_map(logits, labels, ignore_index)
    if loss == "mce-bal":
        return mce_bal_map(logits, labels, ignore_index, weights)
    return js_map(logits, labels, ignore_index)


class APGD(Attack):
    """APGD with loss `ce`, `mce`, `mce-bal` (needs class_counts or class_weights), `js`, `segpgd` (SegPGD's loss,
    lambda = k / (2 steps) at iterate k of the run) or `mask-norm-corrlog` (the masked normalised correct logit);
    `track_loss` (one of the same) decides step-size halving, the best point and the reset."""

    name = "apgd"
    fixed_by_name = ("loss",)  # the registry names apgd-ce, apgd-mce, ... fix it

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 100, loss: str = "ce",
                 track_loss: str = "ce", random_start: bool = True, class_counts: Sequence[float] | None = None,
                 class_weights: Sequence[float] | None = None, seed: int | None = None, ignore_index: int = 255
                 ) -> None:
        super().__init__(model, eps=eps, alpha=None, steps=steps, random_start=random_start, seed=seed,
                         ignore_index=ignore_index, best=True)
        check_choice("loss", loss, LOSSES)
        check_choice("track_loss", track_loss, LOSSES)
        self.loss, self.track_loss = loss, track_loss
        self.weights = mce_bal_weights((loss, track_loss), class_counts, class_weights)  # (K,) or None
        self.class_counts = None if class_counts is None else torch.as_tensor(class_counts).tolist()
        self.class_weights = None if class_weights is None else torch.as_tensor(class_weights).tolist()
        self.name = f"apgd-{loss}"

    def per_image(self, loss: str, logits: torch.Tensor, labels: torch.Tensor, k: int = 0, steps: int = 1
                  ) -> torch.Tensor:
        """Loss `loss` per image (N,) at iterate k of a run of `steps` steps: its map averaged over valid pixels."""
        return masked_mean(loss_map(loss, logits, labels, self.ignore_index, self.weights, k, steps),
                           valid_mask(labels, self.ignore_index))

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        """The attack's loss at iterate step - 1 of the run (optimise() passes k + 1 for iterate k)."""
        return self.per_image(self.loss, self.logits_of(out), labels, step - 1, state["steps"])

    def expected_passes(self, images: int) -> tuple[int, int]:
        """APGD judges its start point and each step, the last iterate without a gradient: steps + 1 forward passes,
        steps backward."""
        return self.steps + 1, self.steps

    def step_extras(self, state: dict) -> dict:
        """The mean step size that produced the iterate, the stage (SEA's loss and radius) it belongs to and its
        tracked loss."""
        return {"step_size": state["step_size"], "stage": state["stage"], "track_loss": state["track"]}

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
        state: dict = {"step_size": eta, "stage": stage, "steps": steps}

        def judge(k: int, x: torch.Tensor):
            """Attack loss, its gradient (None at the last iterate, which needs none), tracked loss and pixel
            accuracy of iterate k."""
            if k < steps:  # the losses ignore the step index; k + 1 makes the label check run on the first pass
                loss, grad, logits = self.loss_and_grad(x, labels, k + 1, state, records)
            else:
                (loss, logits), grad = self.evaluate(x, labels, k + 1, state), None
            state["track"] = self.per_image(self.track_loss, logits, labels, k, steps)
            acc = self.record(records, k, loss, logits, labels, state)
            return grad, state["track"], acc

        x = x0
        grad, track, acc = judge(0, x)
        best_x, best_acc = keep_best(x, None, x, acc)
        best_track, x_best_track, grad_best = track.clone(), x.clone(), grad.clone()
        x_prev = x
        # the reference's loss history starts at 0, so the first step is a rise when its tracked loss is > 0 (with
        # one step it is compared with itself)
        track_prev = torch.zeros_like(track)
        rises = torch.zeros(n, device=x.device)
        last_mark, reduced_last = 0, torch.ones(n, dtype=torch.bool, device=x.device)
        best_track_last = best_track.clone()
        for k in range(steps):
            z = project(x + eta.view(-1, 1, 1, 1) * grad.sign(), x_nat, radius, "linf")
            x_new = z if k == 0 else project(x + MOMENTUM * (z - x) + (1 - MOMENTUM) * (x - x_prev), x_nat, radius,
                                             "linf")
            x_prev, x = x, x_new
            new_grad, track, acc = judge(k + 1, x)
            grad = grad if new_grad is None else new_grad
            best_x, best_acc = keep_best(best_x, best_acc, x, acc, ties="later")
            rises += (track > (track if steps == 1 else track_prev)).float()
            track_prev = track
            improved = track > best_track
            best_track = torch.where(improved, track, best_track)
            x_best_track = torch.where(improved.view(-1, 1, 1, 1), x, x_best_track)
            grad_best = torch.where(improved.view(-1, 1, 1, 1), grad, grad_best)
            if k + 1 in marks:
                oscillating = rises <= RHO * (k + 1 - last_mark)
                stalled = ~reduced_last & (best_track <= best_track_last)
                reduce = oscillating | stalled
                eta = torch.where(reduce, eta / 2, eta)
                state["step_size"] = eta
                r = reduce.view(-1, 1, 1, 1)
                x = torch.where(r, x_best_track, x)  # x_prev stays: the momentum is kept
                grad = torch.where(r, grad_best, grad)
                reduced_last, best_track_last = reduce, best_track.clone()
                rises.zero_()
                last_mark = k + 1
        return best_x, best_acc
