"""Dilated ResNet backbones (output stride 8) with a deep 3-conv stem or a plain 7x7 stem: MODEL.backbone resnet,
with MODEL.layers (18, 34, 50, 101) and MODEL.deep_stem.

The residual blocks are torchvision's. Layers 3 and 4 keep the resolution of layer 2: their strides
become 1 and every 3x3 convolution in them is dilated by 2 (layer3) and 4 (layer4), as in semseg's
PSPNet. Parameter names follow torchvision and semseg, so both kinds of ImageNet checkpoints load
with strict key checking (see `load_backbone_weights`).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from model.pretrained import load_strict, read_backbone_file, unwrap
from model.registry import BACKBONES
from util.errors import UserError

BLOCKS: dict[int, tuple[type[nn.Module], tuple[int, int, int, int]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
}


def _dilate(layer: nn.Sequential, dilation: int) -> None:
    """Turn a stride-2 stage into a stride-1 stage whose 3x3 convolutions are all dilated."""
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            if module.kernel_size == (3, 3):
                module.dilation, module.padding = (dilation, dilation), (dilation, dilation)
            module.stride = (1, 1)


class DilatedResNet(nn.Module):
    """ResNet-18/34/50/101 with output stride 8.

    forward(x: (N,3,H,W) normalised) -> [layer1, layer2, layer3, layer4], each (N,C,h,w): `channels` gives C per
    level, `strides` H/h (4, 8, 8, 8).
    """

    def __init__(self, layers: int = 50, deep_stem: bool = True) -> None:
        super().__init__()
        if layers not in BLOCKS:
            raise UserError(f"MODEL.layers must be one of {sorted(BLOCKS)}, got {layers}")
        block, counts = BLOCKS[layers]
        self.deep_stem = deep_stem
        if deep_stem:
            # semseg's "deep base": three 3x3 convolutions, the first with stride 2.
            self.conv1 = nn.Conv2d(3, 64, 3, stride=2, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.conv2 = nn.Conv2d(64, 64, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(64)
            self.conv3 = nn.Conv2d(64, 128, 3, padding=1, bias=False)
            self.bn3 = nn.BatchNorm2d(128)
            self.inplanes = 128
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.inplanes = 64
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.layer1 = self._make_layer(block, 64, counts[0], stride=1)
        self.layer2 = self._make_layer(block, 128, counts[1], stride=2)
        self.layer3 = self._make_layer(block, 256, counts[2], stride=2)
        self.layer4 = self._make_layer(block, 512, counts[3], stride=2)
        _dilate(self.layer3, 2)
        _dilate(self.layer4, 4)
        self.channels = tuple(p * block.expansion for p in (64, 128, 256, 512))  # layer1 .. layer4
        self.strides = (4, 8, 8, 8)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block: type[nn.Module], planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        if self.deep_stem:
            x = self.relu(self.bn2(self.conv2(x)))
            x = self.relu(self.bn3(self.conv3(x)))
        return self.maxpool(x)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.layer1(self.stem(x))
        c2 = self.layer2(c1)
        c3 = self.layer3(c2)
        return [c1, c2, c3, self.layer4(c3)]


@BACKBONES.register("resnet")
def resnet(cfg, pretrained: str = "") -> DilatedResNet:
    """MODEL.layers and MODEL.deep_stem; `pretrained` an ImageNet file loaded strictly (load_backbone_weights)."""
    backbone = DilatedResNet(cfg.MODEL.layers, deep_stem=cfg.MODEL.deep_stem)
    if pretrained:
        load_backbone_weights(backbone, pretrained)
    return backbone


def load_backbone_weights(backbone: DilatedResNet, path: str | Path) -> None:
    """Load an ImageNet checkpoint into `backbone` with strict key and shape checking.

    Accepts a plain state dict or one wrapped under "state_dict" (semseg's `resnet50_v2.pth` and torchvision's
    `resnet50-*.pth` alike), and RobustBench's robust ResNets (`Salman2020Do_R50`, `Salman2020Do_R18`: torchvision's
    names, possibly under `module.` / `model.` and beside its `normalize.*` layer). The classifier `fc.*` and the
    normalisation are dropped; any other missing or unexpected key, or a shape mismatch, is a UserError that lists
    them.
    """
    state, _ = unwrap(read_backbone_file(path), prefixes=("module.", "model."))
    state = {k: v for k, v in state.items() if not k.startswith(("fc.", "normalize."))}
    hint, keys, own = "", set(state), set(backbone.state_dict())
    stem_keys = {"conv2.weight", "conv3.weight"}
    if stem_keys & (keys - own):
        hint = "\nThe file has a deep 3-conv stem: set MODEL.deep_stem true."
    elif stem_keys & (own - keys):
        hint = "\nThe file has a plain 7x7 stem: set MODEL.deep_stem false."
    load_strict(backbone, state, path, f"ResNet, deep_stem={backbone.deep_stem}", hint=hint)
