"""Segmentation models: `build_model(cfg)` builds PSPNet or DeepLabv3 on a dilated ResNet."""
from __future__ import annotations

import torch
from torch import nn
from torchvision.models.segmentation.fcn import FCNHead

from model.deeplabv3 import ASPPHead
from model.pspnet import PSPHead
from model.resnet import DilatedResNet, load_backbone_weights
from model.segmentor import Segmentor
from model.semseg import DDCATHead, SemsegASPPHead, SemsegPSPHead, semseg_aux_head
from util.errors import UserError

ARCHS = ("pspnet", "deeplabv3", "pspnet_ddcat", "deeplabv3_ddcat")  # the last two: DDC-AT's, MODEL.style semseg

__all__ = ["build_model", "Segmentor", "DilatedResNet", "load_backbone_weights"]


def build_model(cfg, backbone_weights: bool = True) -> Segmentor:
    """Build the model a config describes (keys MODEL.* and DATA.classes/mean/std).

    MODEL.pretrained, when set, loads ImageNet backbone weights with strict checking; backbone_weights=False skips
    it, for a caller that loads the whole network next (a trained checkpoint needs no ImageNet file).
    """
    m = cfg.MODEL
    backbone = DilatedResNet(m.layers, deep_stem=m.deep_stem)
    c3, c4 = backbone.channels
    k = cfg.DATA.classes
    if m.arch not in ARCHS:
        raise UserError(f"MODEL.arch must be one of {', '.join(ARCHS)}, got '{m.arch}'")
    if m.arch.endswith("_ddcat") and m.style != "semseg":
        raise UserError(f"MODEL.arch {m.arch} (DDC-AT's network) needs MODEL.style semseg")
    if m.style == "semseg":  # semseg's / the RP-PGD release's / DDC-AT's heads, layer for layer (model/semseg.py)
        if m.head_channels:
            raise UserError("MODEL.head_channels is fixed by MODEL.style semseg (PSPNet 512, DeepLabv3 256): leave "
                            "it 0")
        if m.arch.endswith("_ddcat"):
            head_s: nn.Module = DDCATHead(m.arch, c4, k, m.psp_bins, m.aspp_rates, m.dropout)
        elif m.arch == "pspnet":
            head_s = SemsegPSPHead(c4, k, m.psp_bins, m.dropout)
        else:
            head_s = SemsegASPPHead(c4, k, m.aspp_rates, m.dropout)
        if m.pretrained and backbone_weights:
            load_backbone_weights(backbone, m.pretrained)
        return layout(Segmentor(backbone, head_s, semseg_aux_head(m.arch, c3, k, m.dropout), mean=cfg.DATA.mean,
                                std=cfg.DATA.std, align_corners=True, channels_last=m.channels_last))
    if m.arch == "pspnet":
        head: nn.Module = PSPHead(c4, k, bins=m.psp_bins, channels=m.head_channels or 512, dropout=m.dropout)
    elif m.arch == "deeplabv3":
        head = ASPPHead(c4, k, rates=m.aspp_rates, channels=m.head_channels or 256, dropout=m.dropout)
    aux_head = FCNHead(c3, k)  # 3x3 conv to c3/4 channels, BN, ReLU, dropout 0.1, 1x1 classifier
    if m.pretrained and backbone_weights:
        load_backbone_weights(backbone, m.pretrained)
    return layout(Segmentor(backbone, head, aux_head, mean=cfg.DATA.mean, std=cfg.DATA.std,
                            channels_last=m.channels_last))


def layout(model: Segmentor) -> Segmentor:
    """MODEL.channels_last: the convolution weights (and, in forward, the inputs) in channels-last memory layout."""
    return model.to(memory_format=torch.channels_last) if model.channels_last else model
