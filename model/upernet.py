"""UperNet (Xiao et al., ECCV 2018) as SEA's `uperforseg.py` builds it on ConvNeXt: MODEL.arch upernet, MODEL.style sea.

- decode head "upernet" on all four levels: pyramid pooling on the last (adaptive average pools at MODEL.psp_bins,
  each a 1x1 conv-BN-ReLU to C channels, upsampled bilinearly and concatenated with the level, then a 3x3
  conv-BN-ReLU to C), 1x1 lateral conv-BN-ReLUs on the first three, the top-down path (each level plus its upper
  neighbour upsampled), a 3x3 conv-BN-ReLU on each of the first three, all four upsampled to the first level's size
  and concatenated, a 3x3 conv-BN-ReLU to C and a 1x1 classifier; no dropout. C = MODEL.head_channels (0: 512).
- auxiliary head "upernet_fcn" on the third level: a 3x3 conv-BN-ReLU to C/2 (256) and a 1x1 classifier.
Every upsampling uses align_corners=False, the logits too. The conv-BN-ReLU units are torchvision's
Conv2dNormActivation. SEA's checkpoints load through the WEIGHT_FORMATS entry "sea" (model/sea.py).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import Conv2dNormActivation

from model.registry import ARCHITECTURES, HEADS, Architecture, Head


def unit(cin: int, cout: int, kernel: int) -> Conv2dNormActivation:
    """conv (no bias, padding kernel // 2) + BatchNorm + ReLU: indices 0 and 1 hold weights."""
    return Conv2dNormActivation(cin, cout, kernel, norm_layer=nn.BatchNorm2d, activation_layer=nn.ReLU)


def resize(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class UperNetHead(nn.Module):
    """levels [(N, C_i, h_i, w_i)] x 4 -> (N, K, h_0, w_0) logits."""

    def __init__(self, in_channels: Sequence[int], classes: int, channels: int = 512,
                 bins: Sequence[int] = (1, 2, 3, 6)) -> None:
        super().__init__()
        top = in_channels[-1]
        self.ppm = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), unit(top, channels, 1)) for b in bins)
        self.bottleneck = unit(top + len(bins) * channels, channels, 3)
        self.lateral = nn.ModuleList(unit(c, channels, 1) for c in in_channels[:-1])
        self.fpn = nn.ModuleList(unit(channels, channels, 3) for _ in in_channels[:-1])
        self.fpn_bottleneck = unit(len(in_channels) * channels, channels, 3)
        self.classifier = nn.Conv2d(channels, classes, 1)

    def forward(self, levels: list[torch.Tensor]) -> torch.Tensor:
        top = levels[-1]
        pooled = [resize(p(top), top.shape[-2:]) for p in self.ppm]
        laterals = [conv(x) for conv, x in zip(self.lateral, levels)]
        laterals.append(self.bottleneck(torch.cat([top, *pooled], 1)))
        for i in range(len(laterals) - 1, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1].shape[-2:])
        outs = [conv(x) for conv, x in zip(self.fpn, laterals)] + [laterals[-1]]
        size = outs[0].shape[-2:]
        outs = [outs[0]] + [resize(x, size) for x in outs[1:]]
        return self.classifier(self.fpn_bottleneck(torch.cat(outs, 1)))


class UperNetFCNHead(nn.Sequential):
    """(N, C, h, w) -> (N, K, h, w): SEA's UperNetFCNHead (one 3x3 conv-BN-ReLU, no concatenated input)."""

    def __init__(self, in_channels: int, classes: int, channels: int = 256) -> None:
        super().__init__(unit(in_channels, channels, 3), nn.Conv2d(channels, classes, 1))


def _width(cfg) -> int:
    return cfg.MODEL.head_channels or 512


def _init(module: nn.Module) -> nn.Module:
    """SEA's head initialisation: normal(0, 0.02) weights and zero biases for the convolutions."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return module


def upernet_head(cfg, channels: list[int]) -> UperNetHead:
    return _init(UperNetHead(channels, cfg.DATA.classes, _width(cfg), cfg.MODEL.psp_bins))


def upernet_fcn_head(cfg, channels: int) -> UperNetFCNHead:
    return _init(UperNetFCNHead(channels, cfg.DATA.classes, _width(cfg) // 2))


HEADS.register("upernet", Head(upernet_head, in_index=(0, 1, 2, 3)))
HEADS.register("upernet_fcn", Head(upernet_fcn_head, in_index=-2))
ARCHITECTURES.register("upernet", {"sea": Architecture(head="upernet", aux_head="upernet_fcn", feat_index=-1)})
