"""The worst case over several attacks (METHOD.md §5): per image, and greedily for the dataset mIoU.

Robust evaluation keeps, for every attack and image, the per-class counts (true positives, label pixels,
predicted pixels), which is all a dataset mIoU needs. The dataset-level worst case chooses one attack per
image: it starts from the lowest of these choices: each image's lowest-pixel-accuracy attack (SEA's rule)
and every single attack for all images, so it is never above any one attack's mIoU; then it switches single
images to another attack, each time the switch that lowers the dataset mIoU most, while the mIoU drops.
"""
from __future__ import annotations

import math

import torch

from util.metrics import SegMetric, miou_from_counts, scores_from_counts


def dataset_miou(tp: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """util.metrics' mIoU rule, 0 instead of NaN for a dataset without any valid pixel (so choices compare)."""
    return miou_from_counts(tp, gt, pred).nan_to_num(0.0)


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
    scores = [float(dataset_miou(*totals(ch))) for ch in candidates]
    best = min(range(len(candidates)), key=lambda j: (scores[j], j))  # SEA's start wins ties
    choice, current = candidates[best].clone(), scores[best]
    t, g, p = totals(choice)
    for _ in range(a_count * n):
        # dataset counts after switching image i to attack a, for every (a, i) at once: (A,N,K)
        new = dataset_miou(t + tp - tp[choice, images], g + gt - gt[choice, images],
                               p + pred - pred[choice, images])
        flat = int(new.argmin())
        a, i = divmod(flat, n)
        if float(new[a, i]) >= current - 1e-12:
            break
        choice[i] = a
        t, g, p = totals(choice)
        current = float(dataset_miou(t, g, p))
    return choice.tolist(), current


def worst_case_miou(confusions: torch.Tensor) -> tuple[list[int], float]:
    """worst_case_choice from per-image confusion matrices (A,N,K,K) (rows = true class)."""
    cm = torch.as_tensor(confusions)
    if cm.dim() != 4 or cm.shape[2] != cm.shape[3]:
        raise ValueError(f"confusions must have shape (A,N,K,K); got {tuple(cm.shape)}")
    return worst_case_choice(torch.stack([cm.diagonal(dim1=2, dim2=3), cm.sum(3), cm.sum(2)], dim=2))


def worst_case_summary(metrics: dict[str, SegMetric]) -> dict | None:
    """The worst case over attacks evaluated on the same images, for metrics.json (None without attacks).

    "per_image_miou": per image the lowest mean IoU of any attack (never above any attack's own per-image score);
    "mIoU", "mAcc", "aAcc", "per_class_iou": the dataset scores when each image takes the attack of the greedy
    dataset-level choice ("per_image_attack"), which is at most every single attack's mIoU.
    """
    if not metrics:
        return None
    keys = list(metrics)
    indices = sorted(metrics[keys[0]].per_image_counts)
    counts = torch.stack([torch.stack([metrics[k].per_image_counts[i] for i in indices]) for k in keys])
    choice, _ = worst_case_choice(counts)  # counts (A,N,3,K) -> an attack index per image
    chosen = counts[torch.tensor(choice, dtype=torch.long), torch.arange(len(indices))].sum(0)  # (3,K)
    per_image = []
    for i in indices:
        values = [v for v in (metrics[k].per_image[i] for k in keys) if not math.isnan(v)]
        per_image.append(min(values) if values else None)  # None: every pixel of the image is ignored
    return {"attacks": keys, **scores_from_counts(*chosen), "per_image_miou": per_image,
            "per_image_attack": [keys[a] for a in choice],
            "images_per_attack": {k: choice.count(a) for a, k in enumerate(keys)}, "images": len(indices)}
