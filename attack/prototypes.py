"""RP-PGD's prototype terms (METHOD.md §4) on the backbone's feature grid.

Labels and the TRUE-region mask are resized to the feature grid (h,w) with nearest neighbour, so no
full-resolution feature map is built. A "group" is one image (pool "image") or the whole batch (pool "batch");
prototypes and both terms are computed per group. Similarity s(a,b) = (cos(a,b) + 1)/2.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

INTRA_LOW_WEIGHT, INTRA_HIGH_WEIGHT = 0.75, 0.25


@dataclass
class Prototypes:
    """Class prototypes of each group and the pixels they were pooled from."""
    protos: torch.Tensor   # (G,K,C) mean feature of each class's pixels (0 where a class has none)
    present: torch.Tensor  # (G,K) bool: the class has at least one pixel in the group
    pixels: torch.Tensor   # (M,C) features of the pooled pixels
    index: torch.Tensor    # (M,) g*K + class of each pooled pixel


def to_grid(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of integer maps (N,H,W) to (N,h,w)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0].to(maps.dtype)


def class_prototypes(feat: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_classes: int, pool: str
                     ) -> Prototypes:
    """Mean feature per class over the `mask` pixels, per group.

    feat (N,C,h,w); labels (N,h,w) and mask (N,h,w) bool already on the feature grid (masked pixels must hold
    valid class ids). pool "image": G = N groups; "batch": G = 1.
    """
    n, c = feat.shape[:2]
    groups = n if pool == "image" else 1
    rows = feat.permute(0, 2, 3, 1).reshape(-1, c)               # (N*h*w, C), a view
    group_of = torch.arange(n, device=feat.device).view(n, 1, 1).expand_as(labels) if pool == "image" \
        else torch.zeros_like(labels)
    keep = mask.reshape(-1)
    index = (group_of * num_classes + labels).reshape(-1)[keep]
    pixels = rows[keep]
    sums = feat.new_zeros(groups * num_classes, c).index_add(0, index, pixels)
    counts = torch.bincount(index, minlength=groups * num_classes).to(feat.dtype)
    protos = (sums / counts.clamp(min=1).unsqueeze(1)).view(groups, num_classes, c)
    return Prototypes(protos=protos, present=(counts > 0).view(groups, num_classes), pixels=pixels, index=index)


def similarity(a: torch.Tensor, b: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """s(a,b) = (cos(a,b) + 1)/2 along `dim`."""
    return (F.cosine_similarity(a, b, dim=dim, eps=1e-8) + 1) / 2


def inter_loss(p: Prototypes, variant: str) -> torch.Tensor:
    """L_inter per group (G,): mean of s(p_c, p_c') over unordered pairs of present classes (0 if < 2 classes).

    release: the sum over ordered pairs divided by K(K-1)/2, i.e. twice the mean.
    """
    unit = F.normalize(p.protos, dim=-1, eps=1e-8)
    s = (unit @ unit.transpose(1, 2) + 1) / 2                      # (G,K,K)
    pair = p.present.unsqueeze(2) & p.present.unsqueeze(1)
    k = p.present.sum(1).to(s.dtype)
    pairs = k * (k - 1) / 2
    off_diagonal = ~torch.eye(pair.shape[1], dtype=torch.bool, device=pair.device)
    if variant == "described":
        total = (s * (pair & off_diagonal)).sum((1, 2)) / 2
    else:
        total = (s * (pair & off_diagonal)).sum((1, 2))
    return torch.where(pairs > 0, total / pairs.clamp(min=1), torch.zeros_like(total))


def intra_loss(p: Prototypes, tau: float, exclude: tuple[int, ...], variant: str) -> torch.Tensor:
    """L_intra per group (G,): per class, l_c = 0.75 * mean(s_j < tau) + 0.25 * mean(s_j >= tau) over its
    pixels' similarities s_j = s(f_j, p_c) (an empty part adds 0).

    described: mean of l_c over present classes not in `exclude`.
    release:   l_c of the last (highest) present class id other than 0, as the released loop overwrites it.
    """
    groups, num_classes = p.present.shape
    flat = p.protos.reshape(groups * num_classes, -1)
    s = similarity(p.pixels, flat[p.index])                        # (M,)
    low = s.detach() < tau
    l_c = p.protos.new_zeros(groups * num_classes)
    for part, weight in ((low, INTRA_LOW_WEIGHT), (~low, INTRA_HIGH_WEIGHT)):
        sums = p.protos.new_zeros(groups * num_classes).index_add(0, p.index[part], s[part])
        counts = torch.bincount(p.index[part], minlength=groups * num_classes).clamp(min=1)
        l_c = l_c + weight * sums / counts
    l_c = l_c.view(groups, num_classes)
    class_ids = torch.arange(num_classes, device=l_c.device)
    if variant == "described":
        eligible = p.present & ~torch.isin(class_ids, torch.tensor(exclude, dtype=torch.long, device=l_c.device))
        return (l_c * eligible).sum(1) / eligible.sum(1).clamp(min=1)
    eligible = p.present & (class_ids != 0)
    last = torch.where(eligible, class_ids, torch.full_like(class_ids, -1)).max(1).values   # (G,)
    picked = l_c.gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1)
    return torch.where(last >= 0, picked, torch.zeros_like(picked))
