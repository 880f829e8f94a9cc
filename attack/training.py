"""What adversarial training needs from an attack (METHOD.md §6): the mixed batch of one training step."""
from __future__ import annotations

import math

import torch

from attack.base import Attack


def adversarial_count(batch: int, ratio: float) -> int:
    """How many images of a per-process batch are replaced: ratio x batch rounded half up, at least one."""
    return min(batch, max(1, math.floor(ratio * batch + 0.5)))


def adversarial_batch(attack: Attack, images: torch.Tensor, labels: torch.Tensor, ratio: float
                      ) -> tuple[torch.Tensor, int]:
    """The training batch with its first adversarial_count(N, ratio) images replaced by adversarial versions.

    Only those images are attacked (the release attacked the whole batch and threw half away); the attack runs
    in eval mode (BN running statistics and dropout untouched) and restores every module's mode. Returns the
    batch (N,3,H,W) and the number of adversarial images at its front.
    """
    n_adv = adversarial_count(len(images), ratio)
    adv = attack(images[:n_adv], labels[:n_adv])
    return torch.cat([adv, images[n_adv:]]), n_adv
