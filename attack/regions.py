"""RP-PGD's region state (docs/method.md §4): True, Boundary and False pixels, kept across attack steps.

- FALSE: wrong on the start image x_0.
- BOUNDARY: correct on x_0 and wrong on some later iterate; sticky.
- TRUE: correct on every iterate so far.
- IGNORED: ignore_index pixels, in no region (the release variant treats them as never correct, so they land
  in FALSE instead).
Correctness is judged on the iterate at which the step's gradient is taken, so each step costs one forward.
"""
from __future__ import annotations

import torch

TRUE, BOUNDARY, FALSE, IGNORED = 0, 1, 2, 255


def initial_regions(correct: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """(N,H,W) uint8 from correctness on x_0: TRUE where correct, FALSE where wrong, IGNORED outside `valid`."""
    regions = torch.where(correct, TRUE, FALSE).to(torch.uint8)
    return torch.where(valid, regions, torch.full_like(regions, IGNORED))


def update_regions(regions: torch.Tensor, correct: torch.Tensor) -> torch.Tensor:
    """TRUE pixels that are wrong on the current iterate become BOUNDARY; every other pixel keeps its region."""
    return torch.where((regions == TRUE) & ~correct, torch.full_like(regions, BOUNDARY), regions)


def region_weights(step: int, steps: int, zero_based: bool = False) -> tuple[float, float, float]:
    """(lambda_T, lambda_B, lambda_F) at step t = `step` (1-based) of T = `steps`.

    1 - t/(2T), (t-1)/(2T), 1/(2T) (they sum to 1); zero_based (the release): the same formulas with the 0-based
    index i = t-1 (lambda_B is negative at i = 0, where B is empty).
    """
    i = step - 1 if zero_based else step
    return 1.0 - i / (2 * steps), (i - 1) / (2 * steps), 1.0 / (2 * steps)


def region_loss(ce: torch.Tensor, regions: torch.Tensor, weights: tuple[float, float, float], per_image: bool
                ) -> torch.Tensor:
    """lT * mean_T CE + lB * mean_B CE + lF * mean_F CE, an empty region adding 0; (N,) or a scalar.

    One scatter sums CE and pixel counts per region (IGNORED pixels go to a fourth slot that is dropped).
    """
    n = ce.shape[0]
    slot = regions.reshape(n, -1).long().clamp(max=3)
    sums = ce.new_zeros(n, 4).scatter_add(1, slot, ce.reshape(n, -1))
    counts = ce.new_zeros(n, 4).scatter_add(1, slot, torch.ones_like(ce).reshape(n, -1))
    if not per_image:
        sums, counts = sums.sum(0), counts.sum(0)
    means = sums / counts.clamp(min=1)
    w = ce.new_tensor([weights[TRUE], weights[BOUNDARY], weights[FALSE], 0.0])
    return (means * w).sum(-1)


class RegionHistory:
    """The region map after every judged iterate of one image, rebuilt from the attack's iterates with the rules above:
    on_iterate(step, logits (N,K,h,w), labels (N,h,w)) for the image at `position` (Attack.region_history())."""

    def __init__(self, position: int, ignore_index: int, ignored_in_false: bool = False) -> None:
        self.position, self.ignore_index, self.ignored_in_false = position, ignore_index, ignored_in_false
        self.maps: list[torch.Tensor] = []

    def __call__(self, step: int, logits: torch.Tensor, labels: torch.Tensor) -> None:
        y = labels[self.position:self.position + 1]
        valid = y != self.ignore_index
        correct = (logits[self.position:self.position + 1].argmax(1) == y) & valid
        if self.ignored_in_false:  # the release variant: ignored pixels are never correct and so land in False
            valid = torch.ones_like(valid)
        if step == 0:
            self.maps = [initial_regions(correct, valid)[0].cpu()]
        else:
            self.maps.append(update_regions(self.maps[-1][None].to(correct.device), correct)[0].cpu())
