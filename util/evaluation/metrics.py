"""Segmentation metrics from one confusion-matrix accumulator (docs/method.md §7).

Ignore pixels are removed before counting. mIoU averages I/U over the classes that occur in the labels or
the predictions; mAcc averages recall over the classes that occur in the labels; aAcc is pixel accuracy.
The per-image mean IoU applies the same mIoU rule to each image's own confusion matrix.
"""
from __future__ import annotations

import math

import torch


def confusion_matrix(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = 255
                     ) -> torch.Tensor:
    """(K, K) int64 counts, rows = true class, columns = predicted class, for any matching shapes."""
    keep = label != ignore_index
    y, p = label[keep].long(), pred[keep].long()
    if y.numel() and (int(y.max()) >= num_classes or int(y.min()) < 0):
        raise ValueError(f"label values must be in [0, {num_classes}) or {ignore_index}")
    return torch.bincount(y * num_classes + p, minlength=num_classes ** 2).view(num_classes, num_classes).cpu()


def confusion_matrices(pred: torch.Tensor, label: torch.Tensor, num_classes: int, ignore_index: int = 255
                       ) -> torch.Tensor:
    """(N, K, K) int64 counts of each image of a batch (pred and label (N,H,W)), on their device: one bincount
    for the batch, so evaluation moves N x K x K numbers to the host instead of the predictions."""
    n, k = label.shape[0], num_classes
    keep = label != ignore_index
    y = label.long()
    if bool(((y < 0) | (y >= k))[keep].any()):
        raise ValueError(f"label values must be in [0, {k}) or {ignore_index}")
    image = torch.arange(n, device=label.device).view(n, *([1] * (label.dim() - 1))).expand_as(label)
    index = ((image * k + y) * k + pred.long())[keep]
    return torch.bincount(index, minlength=n * k * k).view(n, k, k)


def scores(cm: torch.Tensor) -> dict:
    """mIoU, mAcc, aAcc (fractions in [0,1]) and per-class IoU (None where a class occurs nowhere)."""
    cm = cm.double()
    return scores_from_counts(cm.diag(), cm.sum(1), cm.sum(0))


def class_iou(tp: torch.Tensor, gt: torch.Tensor, predicted: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class IoU (..., K) from counts (..., K) of true positives, label and predicted pixels (0 where a class
    occurs nowhere), and whether each class occurs (in the labels or the predictions)."""
    union = gt + predicted - tp
    occurs = union > 0
    return torch.where(occurs, tp / union.clamp(min=1), torch.zeros_like(tp)), occurs


def miou_from_counts(tp: torch.Tensor, gt: torch.Tensor, predicted: torch.Tensor) -> torch.Tensor:
    """The mIoU rule for (..., K) counts: mean IoU over the classes that occur; NaN where none does."""
    tp, gt, predicted = tp.double(), gt.double(), predicted.double()
    iou, occurs = class_iou(tp, gt, predicted)
    count = occurs.sum(-1)
    return torch.where(count > 0, iou.sum(-1) / count.clamp(min=1), torch.full_like(iou.sum(-1), float("nan")))


def scores_from_counts(tp: torch.Tensor, gt: torch.Tensor, predicted: torch.Tensor) -> dict:
    """scores() from per-class (K,) counts: true positives, label pixels, predicted pixels."""
    tp, gt, predicted = tp.double(), gt.double(), predicted.double()
    iou, occurs = class_iou(tp, gt, predicted)
    total = gt.sum()
    return {
        "mIoU": float(miou_from_counts(tp, gt, predicted)),
        # what semseg's, DDC-AT's and the RP-PGD release's cal_acc print: I / (U + 1e-10) averaged over all K classes,
        # a class that occurs nowhere counting as 0
        "mIoU_all_classes": float((tp / (gt + predicted - tp + 1e-10)).mean()) if len(tp) else float("nan"),
        "mAcc": float((tp[gt > 0] / gt[gt > 0]).mean()) if (gt > 0).any() else float("nan"),
        "aAcc": float(tp.sum() / total) if total > 0 else float("nan"),
        "per_class_iou": [float(v) if o else None for v, o in zip(iou.tolist(), occurs.tolist())],
    }


class SegMetric:
    """Accumulates a dataset's confusion matrix and each image's mean IoU."""

    def __init__(self, num_classes: int, ignore_index: int = 255) -> None:
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.cm = torch.zeros(num_classes, num_classes, dtype=torch.int64)
        self.per_image: dict[int, float] = {}  # dataset index -> mean IoU of that image
        # dataset index -> (3,K) int64: true positives, label and prediction counts per class of that image,
        # all a dataset-level worst case over attacks needs (engine/worst_case.py)
        self.per_image_counts: dict[int, torch.Tensor] = {}
        # run name -> the metric of one of an attack's separate runs on the same images (SEA's losses), filled by
        # engine.evaluation when the attack reports its runs
        self.runs: dict[str, SegMetric] = {}
        # engine.sanity's findings (strings), and for an attack the dataset images whose input gradient stayed zero
        self.warnings: list[str] = []
        self.zero_gradient: list[int] = []
        # for a minimal-norm attack (adv_lib's): dataset index -> the smallest L-inf norm it found that fools at
        # least 99% of the image's valid pixels (inf where it found none)
        self.min_norm: dict[int, float] = {}

    def update(self, pred: torch.Tensor, label: torch.Tensor, index: int) -> torch.Tensor:
        """Add one image (pred and label (H,W)); returns its confusion matrix."""
        cm = confusion_matrix(pred, label, self.num_classes, self.ignore_index)
        self.add(cm, index)
        return cm

    def add(self, cm: torch.Tensor, index: int) -> torch.Tensor:
        """Add one image by its (K,K) confusion matrix (confusion_matrices gives a batch's); returns it."""
        cm = cm.cpu()
        self.cm += cm
        self.per_image[int(index)] = scores(cm)["mIoU"]
        self.per_image_counts[int(index)] = torch.stack([cm.diag(), cm.sum(1), cm.sum(0)])
        return cm

    def summary(self) -> dict:
        """scores() of the dataset plus "per_image_miou" ordered by dataset index."""
        out = scores(self.cm)
        # None for an image whose pixels are all ignored (JSON has no NaN)
        out["per_image_miou"] = [None if math.isnan(v) else v for _, v in sorted(self.per_image.items())]
        out["images"] = len(self.per_image)
        return out
