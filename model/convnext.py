"""ConvNeXt backbones as SEA's UperNet uses them (Croce et al., ECCV 2024; its `convnext_orig.py`): MODEL.backbone
convnext, MODEL.variant t (depths 3-3-9-3) or s (3-3-27-3), widths 96-192-384-768, MODEL.stem patch (a 4x4 stride-4
convolution and a LayerNorm) or conv (SEA's `_CVST` models: two 3x3 stride-2 convolutions to 48 and 96 channels,
each followed by a LayerNorm and GELU), and a LayerNorm on each stage's output (SEA's `norm0..norm3`).

The blocks are torchvision's CNBlock (depthwise 7x7, LayerNorm, MLP x4, layer scale, stochastic depth growing
linearly to 0.4 for -T and 0.3 for -S over the blocks, as SEA's settings); layer scales start at 1.0 as SEA's
backbone sets them (its weights then come from a robust ImageNet file or a checkpoint). MODEL.depths and
MODEL.widths replace the variant's for small models (the demo).

`pretrained` reads revisiting-at's ImageNet files (Singh et al., NeurIPS 2023; timm's ConvNeXt names, the stem
replaced by the conv stem) strictly: see `imagenet_key` and initmodel/README.md.
"""
from __future__ import annotations

import re

import torch
from torch import nn
from torchvision.models.convnext import CNBlock, LayerNorm2d

from model.pretrained import load_strict, read_backbone_file, unwrap
from model.registry import BACKBONES
from util.errors import UserError

# variant: (depths, widths, stochastic depth at the last block), SEA's CONVNEXT_SETTINGS
VARIANTS = {"t": ((3, 3, 9, 3), (96, 192, 384, 768), 0.4), "s": ((3, 3, 27, 3), (96, 192, 384, 768), 0.3)}
STEMS = ("patch", "conv")


def conv_stem(width: int) -> nn.Sequential:
    """SEA's ConvBlock1 for a first stage of `width` channels: indices 0, 1, 3, 4 hold weights."""
    half = width // 2
    return nn.Sequential(nn.Conv2d(3, half, 3, stride=2, padding=1), LayerNorm2d(half, eps=1e-6), nn.GELU(),
                         nn.Conv2d(half, width, 3, stride=2, padding=1), LayerNorm2d(width, eps=1e-6), nn.GELU())


class ConvNeXt(nn.Module):
    """forward(x: (N,3,H,W) normalised) -> four levels at strides 4, 8, 16, 32, each after its output LayerNorm."""

    def __init__(self, depths, widths, stem: str = "patch", drop_path: float = 0.0, layer_scale: float = 1.0
                 ) -> None:
        super().__init__()
        if stem not in STEMS:
            raise UserError(f"MODEL.stem must be one of {list(STEMS)} for MODEL.backbone convnext, got {stem!r}")
        self.stem_kind = stem
        self.stem = (nn.Sequential(nn.Conv2d(3, widths[0], 4, stride=4), LayerNorm2d(widths[0], eps=1e-6))
                     if stem == "patch" else conv_stem(widths[0]))
        self.downsample = nn.ModuleList(nn.Sequential(LayerNorm2d(widths[i], eps=1e-6),
                                                      nn.Conv2d(widths[i], widths[i + 1], 2, stride=2))
                                        for i in range(3))
        rates = torch.linspace(0, drop_path, sum(depths)).tolist()
        starts = [sum(depths[:i]) for i in range(4)]
        self.stages = nn.ModuleList(nn.Sequential(*(CNBlock(widths[i], layer_scale, rates[starts[i] + j])
                                                    for j in range(depths[i]))) for i in range(4))
        self.norms = nn.ModuleList(LayerNorm2d(w, eps=1e-6) for w in widths)
        self.channels, self.strides = tuple(widths), (4, 8, 16, 32)
        for m in self.modules():  # SEA's initialisation: truncated normal (std 0.02), zero biases
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i in range(4):
            x = self.stages[i](self.stem(x) if i == 0 else self.downsample[i - 1](x))
            out.append(self.norms[i](x))
        return out


def convnext_settings(cfg) -> tuple[tuple[int, ...], tuple[int, ...], float]:
    """(depths, widths, drop_path) of MODEL.variant, MODEL.depths and MODEL.widths overriding the variant's."""
    m = cfg.MODEL
    if m.variant not in VARIANTS:
        raise UserError(f"MODEL.variant must be one of {sorted(VARIANTS)} for MODEL.backbone convnext, "
                        f"got {m.variant!r}")
    depths, widths, drop = VARIANTS[m.variant]
    for key, value in (("depths", m.depths), ("widths", m.widths)):
        if value and (len(value) != 4 or not all(isinstance(v, int) and v > 0 for v in value)):
            raise UserError(f"MODEL.{key} must be four positive integers for MODEL.backbone convnext (or [] for "
                            f"the variant's), got {value}")
    widths = tuple(m.widths or widths)
    if m.stem == "conv" and widths[0] % 2:
        raise UserError(f"MODEL.stem conv halves the first width: MODEL.widths[0] must be even, got {widths[0]}")
    return tuple(m.depths or depths), widths, drop


@BACKBONES.register("convnext")
def convnext(cfg, pretrained: str = "") -> ConvNeXt:
    depths, widths, drop = convnext_settings(cfg)
    backbone = ConvNeXt(depths, widths, cfg.MODEL.stem, drop)
    if pretrained:
        load_convnext_imagenet(backbone, pretrained)
    return backbone


# ---- revisiting-at's ImageNet files --------------------------------------------------------------------------------
# timm's ConvNeXt names inside a block -> torchvision's CNBlock names
BLOCK_NAMES = {"conv_dw": "block.0", "norm": "block.2", "mlp.fc1": "block.3", "mlp.fc2": "block.5",
               "gamma": "layer_scale"}


def imagenet_key(key: str, stem: str) -> str | None:
    """This backbone's name for a key of revisiting-at's timm ConvNeXt (after its wrappers are removed), or None.

    timm: `stem.0|1` (patchify stem) or `stem.stem.0|1|3|4` (conv stem), `stages.<i>.downsample.0|1` (i = 1..3),
    `stages.<i>.blocks.<k>.{conv_dw,norm,mlp.fc1,mlp.fc2,gamma}`; its classifier `head.*` has no counterpart.
    """
    m = re.fullmatch(r"stem\.(stem\.)?(\d)\.(weight|bias)", key)
    if m and bool(m.group(1)) == (stem == "conv"):
        return f"stem.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"stages\.([123])\.downsample\.([01])\.(weight|bias)", key)
    if m:
        return f"downsample.{int(m.group(1)) - 1}.{m.group(2)}.{m.group(3)}"
    m = re.fullmatch(r"stages\.(\d)\.blocks\.(\d+)\.(conv_dw|norm|mlp\.fc1|mlp\.fc2|gamma)(\.weight|\.bias)?", key)
    if m:
        return f"stages.{m.group(1)}.{m.group(2)}.{BLOCK_NAMES[m.group(3)]}{m.group(4) or ''}"
    return None


def load_convnext_imagenet(backbone: ConvNeXt, path: str) -> None:
    """Load a revisiting-at ConvNeXt file strictly: every backbone weight but the stage output norms (which SEA adds
    and initialises to 1 and 0) must come from the file, and every file entry but the classifier `head.*` and the
    input normalisation `normalize.*` must be used. Layer scales are stored as (C,) there and (C,1,1) here."""
    state, _ = unwrap(read_backbone_file(path), prefixes=("module.", "base_model.", "model."))
    renamed, unused = {}, []
    for key, value in state.items():
        if key.startswith(("head.", "normalize.")):
            continue
        name = imagenet_key(key, backbone.stem_kind)
        if name is None:
            unused.append(key)
        else:
            renamed[name] = value.reshape(-1, 1, 1) if name.endswith("layer_scale") else value
    hint = ""
    if any(k.startswith("stem.stem.") for k in unused):
        hint = "\nThe file has the conv stem: set MODEL.stem conv."
    elif any(re.match(r"stem\.\d", k) for k in unused):
        hint = "\nThe file has the patchify stem: set MODEL.stem patch."
    load_strict(backbone, renamed, path, f"ConvNeXt, stem={backbone.stem_kind}", unused=unused,
                fresh=("norms.",), hint=hint)
