"""The worst case over several attacks (docs/method.md §5): per image, greedily for the dataset mIoU, and SEA's own.

Robust evaluation keeps, for every attack and image, the per-class counts (true positives, label pixels,
predicted pixels), which is all a dataset mIoU needs. The dataset-level worst case chooses one attack per
image: it starts from the lowest of these choices: each image's lowest-pixel-accuracy attack, every single
attack for all images and any choice the caller adds (SEA's), so it is never above any of them; then it switches
single images to another attack, each time the switch that lowers the dataset mIoU most, while the mIoU drops.

SEA's reported figure (`sea_worst_case`) is its own greedy search over its loss runs, as the authors'
`tools/worse_only.py` computes it. This module computes choices; engine/report.py turns them into metrics.json's
entries.
"""
from __future__ import annotations

import math
import random
from typing import Sequence

import numpy as np
import torch

from util.evaluation.metrics import SegMetric, miou_from_counts


def dataset_miou(tp: torch.Tensor, gt: torch.Tensor, pred: torch.Tensor) -> torch.Tensor:
    """The metrics' mIoU rule, 0 instead of NaN for a dataset without any valid pixel (so choices compare)."""
    return miou_from_counts(tp, gt, pred).nan_to_num(0.0)


def worst_case_choice(counts: torch.Tensor, starts: Sequence[Sequence[int]] = ()) -> tuple[list[int], float]:
    """Greedy dataset-level worst case from per-image counts.

    counts: (A,N,3,K) for A attacks on the same N images: true positives, label pixels and predicted pixels per
    class (SegMetric.per_image_counts). starts: further starting choices (an attack index per image).
    Returns (attack index per image, dataset mIoU as a fraction), at most the mIoU of every start.
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
    candidates += [torch.as_tensor(list(start), dtype=torch.long) for start in starts]
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


SEA_SEED = 225  # tools/worse_only.py seeds Python's random with 225 and shuffles the images with it
SEA_TOLERANCE = 1e-6  # its rounds stop once one lowers the mIoU by at most this
SEA_UNION_EPS = 1e-8  # it adds this to every union when it judges a candidate


def sea_candidate_miou(total: np.ndarray, candidate: np.ndarray) -> float:
    """The reference's estimate of the dataset mIoU after a switch, from the (3,K) counts before (`total`) and after
    (`candidate`) it: the mean over the classes whose union is not empty *before* the switch of
    I / (U + 1e-8). It sits just below the true mIoU, so a candidate whose mIoU equals the current one passes
    the strict test `estimate < mIoU before the visit`, the image's current run included."""
    union_before = total[1] + total[2] - total[0]
    keep = union_before > 0
    if not keep.any():
        return 0.0
    union = candidate[1] + candidate[2] - candidate[0]
    return float(np.mean(candidate[0][keep] / (union[keep] + SEA_UNION_EPS)))


def sea_worst_case(counts: torch.Tensor, start: int = 0, seed: int = SEA_SEED, max_rounds: int = 1000
                   ) -> tuple[list[int], float]:
    """SEA's dataset-level worst case over its runs, as the authors' tools/worse_only.py computes it.

    counts: (R,N,3,K) per-image counts of R runs (SEA's losses, in order) on the same N images, as
    worst_case_choice. Every image starts on run `start` (MCE-Bal). A round visits the images in an order shuffled
    with random.Random(seed) (reshuffled each round, as the reference's global generator seeded with 225); at an
    image it tries the runs in order and switches to each whose estimated mIoU (sea_candidate_miou) is below the
    mIoU before the visit. Since the image's own run always passes that test, a visit ends on the last run, in
    order from the image's own, that does not raise the mIoU: an image never moves to an earlier run. Rounds end
    once one lowers the mIoU by at most 1e-6, or after max_rounds. Counts are exact here; the reference sums
    float32 counts, which round above 2^24 pixels per class. (engine's own worst_case_choice goes on from this
    choice to a lower one where there is one.) Returns (run index per image, dataset mIoU as a fraction, by
    util.evaluation.metrics' rule).
    """
    c = torch.as_tensor(counts).double()
    if c.dim() != 4 or c.shape[2] != 3:
        raise ValueError(f"counts must have shape (R,N,3,K); got {tuple(c.shape)}")
    runs, n = c.shape[:2]
    if not 0 <= start < runs:
        raise ValueError(f"start must index one of the {runs} runs; got {start}")
    per_image = c.numpy()  # (R,N,3,K)
    choice = [start] * n
    total = per_image[start].sum(0)  # (3,K): the dataset's counts under the current choice

    def miou(t: np.ndarray) -> float:
        return float(dataset_miou(*torch.from_numpy(t)))

    current, previous = miou(total), math.inf
    rng = random.Random(seed)
    for _ in range(max_rounds):
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            before = current
            for r in range(runs):
                candidate = total - per_image[choice[i], i] + per_image[r, i]
                if sea_candidate_miou(total, candidate) < before:
                    choice[i], total = r, candidate
            current = miou(total)
        if previous - current <= SEA_TOLERANCE:
            break
        previous = current
    return choice, current


def worst_case_miou(confusions: torch.Tensor) -> tuple[list[int], float]:
    """worst_case_choice from per-image confusion matrices (A,N,K,K) (rows = true class)."""
    cm = torch.as_tensor(confusions)
    if cm.dim() != 4 or cm.shape[2] != cm.shape[3]:
        raise ValueError(f"confusions must have shape (A,N,K,K); got {tuple(cm.shape)}")
    return worst_case_choice(torch.stack([cm.diagonal(dim1=2, dim2=3), cm.sum(3), cm.sum(2)], dim=2))


def stacked_counts(metrics: Sequence[SegMetric]) -> tuple[torch.Tensor, list[int]]:
    """The per-image counts (A,N,3,K) of metrics evaluated on the same images, and those images' dataset indices."""
    indices = sorted(metrics[0].per_image_counts)
    return torch.stack([torch.stack([m.per_image_counts[i] for i in indices]) for m in metrics]), indices
