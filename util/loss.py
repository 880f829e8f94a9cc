"""The training loss shared by the training script and the benchmarks."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def segmentation_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Mean cross-entropy over non-ignored pixels (0, not NaN, when every pixel is ignored).

    logits (N,K,H,W), labels (N,H,W) long.
    """
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


def loss_and_accuracy_sums(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int) -> torch.Tensor:
    """Per image (N,3) float64 sums for logging: cross-entropy over valid pixels, correct pixels, valid pixels."""
    with torch.no_grad():
        valid = labels != ignore_index
        ce = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="none")  # 0 where ignored
        correct = (logits.argmax(1) == labels) & valid
        return torch.stack([ce.flatten(1).sum(1), correct.flatten(1).sum(1), valid.flatten(1).sum(1)], 1).double()
