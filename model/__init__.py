"""Segmentation models: `build_model(cfg)` assembles the registered backbone (MODEL.backbone) and the heads of the
architecture (MODEL.arch, MODEL.style) into a Segmentor; see model/registry.py for the registries."""
from __future__ import annotations

import torch

# each module of this line registers its entries
from model import architectures, convnext, deeplabv3, fcn, library, pspnet, resnet, sea, segmenter, semseg, upernet, vit  # noqa: F401
from model.registry import ARCHITECTURES, BACKBONES, FAMILIES, HEADS, WEIGHT_FORMATS, Architecture, Head, WeightFormat
from model.resnet import DilatedResNet, load_backbone_weights
from model.segmentor import Segmentor
from model.weights import to_project_weights
from util.errors import UserError

__all__ = ["ARCHITECTURES", "BACKBONES", "FAMILIES", "HEADS", "WEIGHT_FORMATS", "Architecture", "DilatedResNet", "Head",
           "Segmentor", "WeightFormat", "build_model", "load_backbone_weights", "to_project_weights"]


def build_model(cfg, backbone_weights: bool = True) -> torch.nn.Module:
    """Build the model a config describes (keys MODEL.* and DATA.classes/mean/std).

    MODEL.pretrained, when set, loads ImageNet backbone weights with strict checking; backbone_weights=False skips
    it, for a caller that loads the whole network next (a trained checkpoint needs no ImageNet file).
    """
    m = cfg.MODEL
    family, sep, name = m.arch.partition(":")
    if sep:  # <family>:<name>: a network a library or the user's code builds whole (model/library/)
        return FAMILIES.get(family).build(cfg, name)
    styles = ARCHITECTURES.get(m.arch)
    if m.style not in styles:
        raise UserError(f"MODEL.arch {m.arch} needs MODEL.style {' or '.join(styles)}, got {m.style!r}")
    arch = styles[m.style]
    backbone = BACKBONES.get(m.backbone)(cfg, m.pretrained if backbone_weights else "")
    head_spec = HEADS.get(arch.head)
    head = head_spec.build(cfg, _channels(backbone, head_spec.in_index))
    aux_head, aux_index = None, -2
    if arch.aux_head is not None:
        aux_spec = HEADS.get(arch.aux_head)
        aux_head, aux_index = aux_spec.build(cfg, _channels(backbone, aux_spec.in_index)), aux_spec.in_index
    model = Segmentor(backbone, head, aux_head, mean=cfg.DATA.mean, std=cfg.DATA.std, head_index=head_spec.in_index,
                      aux_index=aux_index, feat_index=arch.feat_index, align_corners=arch.align_corners,
                      channels_last=m.channels_last, logits_stride=arch.logits_stride)
    return model.to(memory_format=torch.channels_last) if m.channels_last else model


def _channels(backbone, index: int | tuple[int, ...]) -> int | list[int]:
    """The channel count(s) of the backbone levels a head reads."""
    return backbone.channels[index] if isinstance(index, int) else [backbone.channels[i] for i in index]
