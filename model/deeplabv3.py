"""DeepLabv3 decode head (Chen et al., 2017): torchvision's ASPP (1x1, atrous 3x3 branches, image
pooling, 1x1 projection), then a 3x3 convolution and the 1x1 classifier. Registered as head "aspp" on the last
backbone level (MODEL.aspp_rates, MODEL.head_channels, MODEL.dropout)."""
from __future__ import annotations

from typing import Sequence

from torch import nn
from torchvision.models.segmentation.deeplabv3 import ASPP

from model.registry import HEADS, Head


class ASPPHead(nn.Sequential):
    """(N, C, h, w) backbone features -> (N, K, h, w) logits."""

    def __init__(
        self, in_channels: int, num_classes: int, rates: Sequence[int] = (6, 12, 18), channels: int = 256,
        dropout: float = 0.1,
    ) -> None:
        super().__init__(
            ASPP(in_channels, list(rates), channels),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Dropout2d(dropout),
            nn.Conv2d(channels, num_classes, 1),
        )


def aspp_head(cfg, channels: int) -> ASPPHead:
    m = cfg.MODEL
    return ASPPHead(channels, cfg.DATA.classes, rates=m.aspp_rates, channels=m.head_channels or 256, dropout=m.dropout)


HEADS.register("aspp", Head(aspp_head, in_index=-1))
