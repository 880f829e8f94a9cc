"""RP-PGD's prototype terms (docs/method.md §4) on the backbone's feature grid.

Labels and the TRUE-region mask are resized to the feature grid (h,w) with nearest neighbour, so no
full-resolution feature map is built. A "group" is one image (pool "image") or the whole batch (pool "batch");
prototypes and both terms are computed per group. Similarity s(a,b) = (cos(a,b) + 1)/2.

Everything is a batched matrix product with a one-hot class matrix on the features' own (N,C,h*w) layout:
no feature map is copied or gathered per pixel, which keeps an RP-PGD++ step close to a PGD step.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

INTRA_LOW_WEIGHT, INTRA_HIGH_WEIGHT = 0.75, 0.25
EPS = 1e-8


@dataclass
class Prototypes:
    """Class prototypes of each group and the pixels they were pooled from."""
    protos: torch.Tensor   # (G,K,C) mean feature of each class's pixels (0 where a class has none)
    present: torch.Tensor  # (G,K) bool: the class has at least one pixel in the group
    feat: torch.Tensor     # (N,C,P) the features, P = h*w
    onehot: torch.Tensor   # (N,P,K) float: pixel p pooled into class k (0 for pixels outside the mask)
    labels: torch.Tensor   # (N,P) class of each pixel (0 outside the mask)
    pool: str

    def per_image(self, x: torch.Tensor) -> torch.Tensor:
        """A group quantity (G,...) indexed per image (N,...)."""
        return x if self.pool == "image" else x.expand(self.feat.shape[0], *x.shape[1:])

    def per_group(self, x: torch.Tensor) -> torch.Tensor:
        """Sum a per-image quantity (N,...) over each group (G,...)."""
        return x if self.pool == "image" else x.sum(0, keepdim=True)


def to_grid(maps: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of integer maps (N,H,W) to (N,h,w)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    return F.interpolate(maps[:, None].float(), size=size, mode="nearest")[:, 0].to(maps.dtype)


def class_prototypes(feat: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, num_classes: int, pool: str
                     ) -> Prototypes:
    """Mean feature per class over the `mask` pixels, per group.

    feat (N,C,h,w); labels (N,h,w) and mask (N,h,w) bool on the feature grid (pixels inside the mask must hold
    valid class ids; outside it any value, e.g. 255). pool "image": G = N groups; "batch": G = 1.
    """
    n, c = feat.shape[:2]
    flat = feat.reshape(n, c, -1)                                           # (N,C,P), a view
    labels = torch.where(mask, labels, torch.zeros_like(labels)).reshape(n, -1)
    onehot = F.one_hot(labels, num_classes).to(feat.dtype) * mask.reshape(n, -1, 1)
    p = Prototypes(protos=feat.new_zeros(0), present=mask.new_zeros(0), feat=flat, onehot=onehot, labels=labels,
                   pool=pool)
    sums = p.per_group(torch.bmm(flat, onehot))                             # (G,C,K)
    counts = p.per_group(onehot.sum(1))                                     # (G,K)
    p.protos = (sums / counts.clamp(min=1).unsqueeze(1)).transpose(1, 2)    # (G,K,C)
    p.present = counts > 0
    return p


def inter_loss(p: Prototypes, ordered_pairs: bool = False) -> torch.Tensor:
    """L_inter per group (G,): mean of s(p_c, p_c') over unordered pairs of present classes (0 if < 2 classes).

    ordered_pairs (the release): the sum over ordered pairs divided by K(K-1)/2, i.e. twice the mean.
    """
    unit = F.normalize(p.protos, dim=-1, eps=EPS)
    s = (unit @ unit.transpose(1, 2) + 1) / 2                      # (G,K,K)
    pair = p.present.unsqueeze(2) & p.present.unsqueeze(1)
    pair &= ~torch.eye(pair.shape[1], dtype=torch.bool, device=pair.device)
    k = p.present.sum(1).to(s.dtype)
    pairs = k * (k - 1) / 2
    total = (s * pair).sum((1, 2))                                 # ordered pairs
    if not ordered_pairs:
        total = total / 2
    return torch.where(pairs > 0, total / pairs.clamp(min=1), torch.zeros_like(total))


def pixel_similarity(p: Prototypes) -> torch.Tensor:
    """s(f_j, p_{y_j}) of every pixel with its own class's prototype, (N,P)."""
    unit = p.per_image(F.normalize(p.protos, dim=-1, eps=EPS))    # (N,K,C)
    dots = torch.bmm(unit, p.feat)                                 # (N,K,P): f_j . p_k / |p_k|
    own = dots.gather(1, p.labels.unsqueeze(1)).squeeze(1)         # (N,P)
    return (own / p.feat.norm(dim=1).clamp(min=EPS) + 1) / 2


INTRA_REDUCTIONS = ("mean", "last")


def intra_loss(p: Prototypes, tau: float, exclude: tuple[int, ...] = (), reduction: str = "mean") -> torch.Tensor:
    """L_intra per group (G,): per class, l_c = 0.75 * mean(s_j < tau) + 0.25 * mean(s_j >= tau) over its
    pixels' similarities s_j = s(f_j, p_c) (an empty part adds 0).

    reduction "mean": mean of l_c over present classes not in `exclude`.
    reduction "last" (the release): l_c of the last (highest) present class id other than 0, as the released
    loop overwrites it (`exclude` must be empty).
    """
    s = pixel_similarity(p)
    low = (s.detach() < tau).to(s.dtype).unsqueeze(2)              # (N,P,1)
    l_c = 0.0
    for part, weight in ((low, INTRA_LOW_WEIGHT), (1 - low, INTRA_HIGH_WEIGHT)):
        members = p.onehot * part                                  # (N,P,K)
        sums = p.per_group(torch.bmm(s.unsqueeze(1), members).squeeze(1))   # (G,K)
        counts = p.per_group(members.sum(1))
        l_c = l_c + weight * sums / counts.clamp(min=1)
    num_classes = p.present.shape[1]
    class_ids = torch.arange(num_classes, device=p.present.device)
    if reduction == "mean":
        eligible = p.present & ~torch.isin(class_ids, torch.tensor(exclude, dtype=torch.long, device=class_ids.device))
        return (l_c * eligible).sum(1) / eligible.sum(1).clamp(min=1)
    eligible = p.present & (class_ids != 0)
    last = torch.where(eligible, class_ids, torch.full_like(class_ids, -1)).max(1).values   # (G,)
    picked = l_c.gather(1, last.clamp(min=0).unsqueeze(1)).squeeze(1)
    return torch.where(last >= 0, picked, torch.zeros_like(picked))
