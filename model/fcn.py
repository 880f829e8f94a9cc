"""The auxiliary FCN head of PSPNet and DeepLabv3 on the second-to-last backbone level (layer3 of a ResNet):
torchvision's FCNHead, a 3x3 convolution to C/4 channels, BN, ReLU, dropout 0.1 and a 1x1 classifier. Registered as
head "fcn"."""
from __future__ import annotations

from torchvision.models.segmentation.fcn import FCNHead

from model.registry import HEADS, Head


def fcn_head(cfg, channels: int) -> FCNHead:
    return FCNHead(channels, cfg.DATA.classes)


HEADS.register("fcn", Head(fcn_head, in_index=-2))
