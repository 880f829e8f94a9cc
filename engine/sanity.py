"""Sanity checks of an evaluation, in the spirit of AutoAttack's checks.py: warnings, never errors.

They catch what makes robustness figures meaningless without failing anything: a module that stays in train
mode, outputs that are probabilities rather than logits, a model whose two forward passes of one input differ,
an attack whose input gradient is zero for a whole image (possible gradient masking), and an attack that leaves
the mIoU above the clean figure. engine.evaluation collects them in SegMetric.warnings; tool_test/test.py logs
them and writes them to metrics.json ("warnings").
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn


def mode_warnings(model: nn.Module) -> list[str]:
    """Modules still in train mode after model.eval() (a module that overrides train())."""
    stuck = [name or type(model).__name__ for name, m in model.named_modules() if m.training]
    if not stuck:
        return []
    return [f"modules stay in train mode at evaluation: {', '.join(stuck[:5])}{' ...' if len(stuck) > 5 else ''}; "
            "BatchNorm statistics and dropout then change the figures"]


def output_warnings(logits: torch.Tensor) -> list[str]:
    """Outputs (N,K,H,W) that look like probabilities: in [0,1] and summing to 1 over the classes."""
    if logits.numel() == 0 or logits.min() < 0 or logits.max() > 1:
        return []
    if not torch.allclose(logits.sum(1), torch.ones_like(logits[:, 0]), atol=1e-3):
        return []
    return ["the model's outputs look like probabilities (in [0,1], summing to 1 over the classes), not logits: "
            "the attacks' losses expect logits and are weaker on probabilities"]


def randomness_warnings(predict: Callable[[], torch.Tensor]) -> list[str]:
    """Two predictions of the same input that differ (randomness left in the model at evaluation); `predict`
    makes one."""
    with torch.no_grad():
        a, b = predict(), predict()
    diff = float((a - b).abs().max())
    if diff <= 1e-5 * max(float(a.abs().max()), 1.0):
        return []
    return [f"two forward passes of the same image differ (by up to {diff:.3g}): the model is random at evaluation, "
            "so attacks see a moving target and figures do not repeat (an EOT attack would be needed)"]


def zero_gradient_warning(attack: str, images: list[int]) -> str:
    return (f"{attack}: the input gradient was zero at every step for dataset image(s) {images} with valid pixels: "
            "possible gradient masking, so the attack's figure may overstate robustness")


def attack_above_clean_warnings(key: str, attacked_miou: float, clean_miou: float) -> list[str]:
    if attacked_miou <= clean_miou + 1e-9:
        return []
    return [f"{key}: mIoU under attack ({attacked_miou:.4f}) is above the clean mIoU ({clean_miou:.4f}): the attack "
            "is not working on this model"]


def mixed_eps_warnings(eps_by_attack: dict[str, float]) -> list[str]:
    """The worst case pools every attack of an evaluation: a warning when their budgets differ."""
    budgets = sorted(set(eps_by_attack.values()))
    if len(budgets) <= 1:
        return []
    listed = ", ".join(f"{k} {e:.4g}" for k, e in eps_by_attack.items())
    return [f"the worst case pools attacks of different eps ({listed}): it is the worst over budgets, not a figure "
            "at one eps (ATTACK.eps_sweep gives one per eps)"]
