"""The segmentation network every architecture shares: normalisation, backbone, head, auxiliary head.

Contract (DESIGN.md, Model): `model(x)` takes (N,3,H,W) in [0,1] RGB and returns logits (N,K,H,W) at
input resolution; `model(x, return_dict=True)` returns {"out", "aux", "feat"}. "aux" is computed only in
training mode (None in eval mode), "feat" is the last backbone stage and is not detached.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.resnet import DilatedResNet


class Normalize(nn.Module):
    """(x - mean) / std per channel; x in [0,1]. The statistics come from the config, not checkpoints."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Segmentor(nn.Module):
    """Backbone + decode head + auxiliary head on layer3, with normalisation as the first layer."""

    def __init__(
        self,
        backbone: DilatedResNet,
        head: nn.Module,
        aux_head: nn.Module,
        mean: Sequence[float],
        std: Sequence[float],
        align_corners: bool = False,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.align_corners = align_corners  # semseg-style networks upsample their logits with align_corners=True
        self.channels_last = channels_last  # inputs are laid out channels-last for the network's convolutions
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.head = head
        self.aux_head = aux_head

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"expected images of shape (N,3,H,W), got {tuple(x.shape)}")
        size = x.shape[-2:]
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        c3, c4 = self.backbone(self.normalize(x))
        out = F.interpolate(self.head(c4), size=size, mode="bilinear", align_corners=self.align_corners)
        if not return_dict:
            return out
        aux = None
        if self.training:
            aux = F.interpolate(self.aux_head(c3), size=size, mode="bilinear", align_corners=self.align_corners)
        return {"out": out, "aux": aux, "feat": c4}

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters trained with the head learning rate (everything but the ImageNet backbone)."""
        return list(self.head.parameters()) + list(self.aux_head.parameters())
