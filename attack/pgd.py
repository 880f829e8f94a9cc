"""FGSM, BIM and PGD (docs/method.md §1): the mean per-pixel cross-entropy over valid pixels, L-inf or L2.

Targeted mode (PGD and CosPGD): `targeted=True` descends the loss toward a target instead of ascending it.
The target is `target_class` at every valid pixel of `labels` when given, otherwise `labels` itself is the
target label map (ignore_index pixels excluded), as in torchattacks' targeted mode.
"""
from __future__ import annotations

import torch
from torch import nn

from attack.base import Attack
from attack.losses import ce_map, masked_mean, valid_mask


class TargetedMixin:
    """The target map and the descent direction of a targeted attack."""

    targeted: bool
    target_class: int | None
    ignore_index: int

    def _init_target(self, targeted: bool, target_class: int | None) -> None:
        if target_class is not None and (isinstance(target_class, bool) or not isinstance(target_class, int)
                                         or target_class < 0):
            raise ValueError(f"target_class must be a class id >= 0 or None; got {target_class!r}")
        if target_class is not None and not targeted:
            raise ValueError("target_class needs targeted=True")
        self.targeted, self.target_class = bool(targeted), target_class

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        if self.target_class is None:
            return labels
        return torch.where(valid_mask(labels, self.ignore_index), torch.full_like(labels, self.target_class), labels)

    @property
    def maximise(self) -> bool:
        return not self.targeted


class PGD(TargetedMixin, Attack):
    """PGD (Madry et al.): random start in the eps ball, `steps` signed (L-inf) or normalised (L2) steps of the
    mean CE over valid pixels, each followed by the projection onto the ball and [0,1]."""

    name = "pgd"
    norms = ("linf", "l2")

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 10,
                 random_start: bool = True, norm: str = "linf", targeted: bool = False,
                 target_class: int | None = None, seed: int | None = None, ignore_index: int = 255,
                 best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, norm=norm, seed=seed,
                         ignore_index=ignore_index, best=best)
        self._init_target(targeted, target_class)

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        target = self.targets(labels)
        loss = ce_map(self.logits_of(out), target, self.ignore_index)
        return masked_mean(loss, valid_mask(target, self.ignore_index))


class BIM(PGD):
    """BIM / I-FGSM (Kurakin et al.): PGD without the random start."""

    name = "bim"
    norms = ("linf",)

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 10,
                 seed: int | None = None, ignore_index: int = 255, best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=False, seed=seed,
                         ignore_index=ignore_index, best=best)


class FGSM(PGD):
    """FGSM (Goodfellow et al.): one signed step of size eps from the clean image."""

    name = "fgsm"
    norms = ("linf",)

    def __init__(self, model: nn.Module, eps: float = 8 / 255, ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, alpha=max(eps, 1e-12), steps=1, random_start=False,
                         ignore_index=ignore_index)
        self.alpha = self.eps
