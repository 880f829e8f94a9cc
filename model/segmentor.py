"""The segmentation network every architecture shares: normalisation, backbone, decode head, auxiliary head.

Contract (docs/design.md, Model): `model(x)` takes (N,3,H,W) in [0,1] RGB and returns logits (N,K,H,W) at input
resolution; `model(x, return_dict=True)` returns {"out", "aux", "feat"}. "aux" is computed only in training mode
(None in eval mode or without an auxiliary head), "feat" is the backbone level `feat_index` (RP-PGD's prototypes
read it) and is not detached. The backbone returns a list of levels; each head reads the levels of its in_index.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

Index = int | tuple[int, ...]


class Normalize(nn.Module):
    """(x - mean) / std per channel; x in [0,1]. The statistics come from the config, not checkpoints."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def levels(features: list[torch.Tensor], index: Index) -> torch.Tensor | list[torch.Tensor]:
    """The level `index` of the backbone's features, or the list of levels of a tuple index."""
    return features[index] if isinstance(index, int) else [features[i] for i in index]


def model_input(x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Images (N,3,H,W) as a model takes them (channels-last in memory when asked); any other shape is a ValueError."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images of shape (N,3,H,W), got {tuple(x.shape)}")
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


class Segmentor(nn.Module):
    """Normalisation, then the backbone's levels, the decode head on the levels head_index and the auxiliary head
    (training mode only) on aux_index; logits are upsampled bilinearly to the input (align_corners and logits_stride
    as the architecture defines them)."""

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        aux_head: nn.Module | None,
        mean: Sequence[float],
        std: Sequence[float],
        head_index: Index = -1,
        aux_index: Index = -2,
        feat_index: int = -1,
        align_corners: bool = False,
        channels_last: bool = False,
        logits_stride: int = 0,
    ) -> None:
        super().__init__()
        self.head_index, self.aux_index, self.feat_index = head_index, aux_index, feat_index
        self.align_corners = align_corners  # semseg-style networks upsample their logits with align_corners=True
        self.logits_stride = logits_stride  # > 0: logits of the input padded to a multiple of it (Segmenter)
        self.channels_last = channels_last  # inputs are laid out channels-last for the network's convolutions
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def upsample(self, logits: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Logits at the input's size: resized to it, or (logits_stride s) upsampled by s and cropped to it."""
        if not self.logits_stride:
            return F.interpolate(logits, size=size, mode="bilinear", align_corners=self.align_corners)
        padded = (logits.shape[-2] * self.logits_stride, logits.shape[-1] * self.logits_stride)
        out = F.interpolate(logits, size=padded, mode="bilinear", align_corners=self.align_corners)
        return out[..., :size[0], :size[1]]

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        size = x.shape[-2:]
        x = model_input(x, self.channels_last)
        features = self.backbone(self.normalize(x))
        out = self.upsample(self.head(levels(features, self.head_index)), size)
        if not return_dict:
            return out
        aux = None
        if self.training and self.aux_head is not None:
            aux = self.upsample(self.aux_head(levels(features, self.aux_index)), size)
        return {"out": out, "aux": aux, "feat": features[self.feat_index]}

    def param_groups(self) -> dict[str, list[nn.Parameter]]:
        """The parameters by learning-rate group: "backbone" (TRAIN.base_lr) and "head", the decode and auxiliary
        heads (TRAIN.base_lr x TRAIN.head_lr_mult)."""
        heads = list(self.head.parameters()) + ([] if self.aux_head is None else list(self.aux_head.parameters()))
        head_ids = {id(p) for p in heads}
        return {"backbone": [p for p in self.parameters() if id(p) not in head_ids], "head": heads}
