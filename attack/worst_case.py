"""The worst case over several attacks (METHOD.md §5): per image, and greedily for the dataset mIoU.

Robust evaluation keeps, for every attack and image, the per-class counts (true positives, label pixels,
predicted pixels), which is all a dataset mIoU needs. The dataset-level worst case chooses one attack per
image: it starts from the lowest of these choices: each image's lowest-pixel-accuracy attack (SEA's rule)
and every single attack for all images, so it is never above any one attack's mIoU; then it switches single
images to another attack, each time the switch that lowers the dataset mIoU most, while the mIoU drops.
"""
from __future__ import annotations

import torch


def miou_from_counts(tp: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """mIoU over the classes that occur (in labels or predictions), for (..., K) counts."""
    union = gt + pred - tp
    occurs = union > 0
    iou = torch.where(occurs, tp / union.clamp(min=1), torch.zeros_like(tp))
    return iou.sum(-1) / occurs.sum(-1).clamp(min=1)


def worst_case_choice(counts: torch.Tensor) -> tuple[list[int], float]:
    """Greedy dataset-level worst case from per-image counts.

    counts: (A,N,3,K) for A attacks on the same N images: true positives, label pixels and predicted pixels per
    class (util.metrics.SegMetric.per_image_counts). Returns (attack index per image, dataset mIoU as a fraction).
    """
    c = torch.as_tensor(counts).double()
    if c.dim() != 4 or c.shape[2] != 3:
        raise ValueError(f"counts must have shape (A,N,3,K); got {tuple(c.shape)}")
    tp, gt, pred = c[:, :, 0], c[:, :, 1], c[:, :, 2]  # (A,N,K) each
    a_count, n = tp.shape[:2]
    images = torch.arange(n)

    def totals(ch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return tp[ch, images].sum(0), gt[ch, images].sum(0), pred[ch, images].sum(0)

    acc = tp.sum(2) / gt.sum(2).clamp(min=1)  # (A,N) pixel accuracy
    candidates = [acc.argmin(0)] + [torch.full((n,), a, dtype=torch.long) for a in range(a_count)]
    scores = [float(miou_from_counts(*totals(ch))) for ch in candidates]
    best = min(range(len(candidates)), key=lambda j: (scores[j], j))  # SEA's start wins ties
    choice, current = candidates[best].clone(), scores[best]
    t, g, p = totals(choice)
    for _ in range(a_count * n):
        # dataset counts after switching image i to attack a, for every (a, i) at once: (A,N,K)
        new = miou_from_counts(t + tp - tp[choice, images], g + gt - gt[choice, images],
                               p + pred - pred[choice, images])
        flat = int(new.argmin())
        a, i = divmod(flat, n)
        if float(new[a, i]) >= current - 1e-12:
            break
        choice[i] = a
        t, g, p = totals(choice)
        current = float(miou_from_counts(t, g, p))
    return choice.tolist(), current


def worst_case_miou(confusions: torch.Tensor) -> tuple[list[int], float]:
    """worst_case_choice from per-image confusion matrices (A,N,K,K) (rows = true class)."""
    cm = torch.as_tensor(confusions)
    if cm.dim() != 4 or cm.shape[2] != cm.shape[3]:
        raise ValueError(f"confusions must have shape (A,N,K,K); got {tuple(cm.shape)}")
    return worst_case_choice(torch.stack([cm.diagonal(dim1=2, dim2=3), cm.sum(3), cm.sum(2)], dim=2))
