"""PAdam (Halmosi, Mohos and Jelasity, ECCV 2024, the `rse` package), docs/method.md: projected AMSGrad-Adam on the
perturbation, step for step as rse runs it.

delta_0 = x_0 - x (the clean image, or a uniform point of the eps ball clipped to [0,1]); each step takes the
gradient of the loss at x + delta, makes one step of torch.optim.Adam (amsgrad=True, maximize=True, learning rate
alpha, default betas and eps), clamps delta to [-eps, eps] and then to [0,1] - x. The result is the last iterate
(or, with `best`, the lowest-accuracy one). Losses: `ce` (cross-entropy) and `cos` (1 - the cosine similarity
between the logits and the one-hot label, as rse computes it), each averaged over the valid pixels of an image.

rse averages its loss over the whole batch; here each image's loss is its own mean, so an image's steps do not
depend on its batch (they differ from rse's with a batch of N only through Adam's eps of 1e-8 on N-times smaller
gradients; with one image they are rse's).
"""
from __future__ import annotations

import torch
from torch import nn

from attack.base import Attack, check_choice
from attack.losses import ce_map, cosine_distance_map, masked_mean, valid_mask

LOSSES = ("ce", "cos")


class PAdam(Attack):
    name = "padam"
    fixed_by_name = ("loss",)  # the registry names padam-ce and padam-cos fix it

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 200,
                 loss: str = "ce", random_start: bool = True, seed: int | None = None, ignore_index: int = 255,
                 best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, seed=seed,
                         ignore_index=ignore_index, best=best)
        check_choice("loss", loss, LOSSES)
        self.loss = loss
        self.name = f"padam-{loss}"

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        logits = self.logits_of(out)
        pixels = (ce_map if self.loss == "ce" else cosine_distance_map)(logits, labels, self.ignore_index)
        return masked_mean(pixels, valid_mask(labels, self.ignore_index))

    def step(self, x: torch.Tensor, grad: torch.Tensor, x_nat: torch.Tensor, state: dict) -> torch.Tensor:
        """One Adam (AMSGrad) ascent step on delta = x - x_nat, then delta clamped to the eps ball and to [0,1] - x_nat.
        The optimiser and its moments live in the run's state, made at the first step from x_0."""
        if "adam" not in state:
            state["delta"] = (x - x_nat).detach().clone()
            state["adam"] = torch.optim.Adam([state["delta"]], lr=self.alpha, amsgrad=True, maximize=True)
        delta = state["delta"]
        delta.grad = grad
        state["adam"].step()
        with torch.no_grad():
            delta.clamp_(-self.eps, self.eps)
            delta.copy_((x_nat + delta).clamp(0.0, 1.0) - x_nat)
        return x_nat + delta
