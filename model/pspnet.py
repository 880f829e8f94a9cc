"""PSPNet decode head (Zhao et al., CVPR 2017): pyramid pooling over bins 1, 2, 3, 6, then a 3x3 head. Registered as
head "psp" on the last backbone level (MODEL.psp_bins, MODEL.head_channels, MODEL.dropout)."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.registry import HEADS, Head


class PyramidPooling(nn.Module):
    """Concatenate x with its average pools at each bin size, each reduced to C/len(bins) channels."""

    def __init__(self, in_channels: int, bins: Sequence[int]) -> None:
        super().__init__()
        reduction = in_channels // len(bins)
        self.stages = nn.ModuleList(
            nn.Sequential(
                nn.AdaptiveAvgPool2d(b),
                nn.Conv2d(in_channels, reduction, 1, bias=False),
                nn.BatchNorm2d(reduction),
                nn.ReLU(inplace=True),
            )
            for b in bins
        )
        self.out_channels = in_channels + reduction * len(bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pooled = [F.interpolate(s(x), size=size, mode="bilinear", align_corners=False) for s in self.stages]
        return torch.cat([x, *pooled], dim=1)


class PSPHead(nn.Sequential):
    """(N, C, h, w) backbone features -> (N, K, h, w) logits."""

    def __init__(
        self, in_channels: int, num_classes: int, bins: Sequence[int] = (1, 2, 3, 6),
        channels: int = 512, dropout: float = 0.1,
    ) -> None:
        ppm = PyramidPooling(in_channels, bins)
        super().__init__(
            ppm,
            nn.Conv2d(ppm.out_channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )


def psp_head(cfg, channels: int) -> PSPHead:
    m = cfg.MODEL
    return PSPHead(channels, cfg.DATA.classes, bins=m.psp_bins, channels=m.head_channels or 512, dropout=m.dropout)


HEADS.register("psp", Head(psp_head, in_index=-1))
