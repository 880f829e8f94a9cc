"""`MODEL.style semseg`: the heads of semseg's PSPNet and of the RP-PGD release's DeepLabV3, layer for layer, and
the mapping of their checkpoints' parameter names onto this project's.

semseg (hszhao/semseg), DDC-AT and the RP-PGD release build `layer0` (the stem), `layer1..4` (a ResNet whose
layer3/layer4 3x3 convolutions are dilated by 2 and 4, which is this project's DilatedResNet), then
- PSPNet: `ppm.features[i]` = (adaptive pool to bin i, 1x1 conv to 2048/len(bins), BN, ReLU), upsampled with
  align_corners=True and concatenated with the features; `cls` = (3x3 conv to 512, BN, ReLU, Dropout2d, 1x1 conv);
  `aux` on layer3 = (3x3 conv to 256, BN, ReLU, Dropout2d, 1x1 conv);
- DeepLabV3 (the release's): `aspp.convs` = (1x1, three 3x3 atrous at the rates, image pooling), each conv + BN +
  ReLU, concatenated; `cls` = (1x1 conv to 256, BN, ReLU, Dropout2d, 1x1 conv); `aux` = (1x1 conv to 256, BN, ReLU,
  Dropout2d, 1x1 conv);
and upsample the logits to the input size with align_corners=True (their inputs have (H-1) % 8 == 0). DDC-AT's
PSPNet_DDCAT and DeepLabV3_DDCAT replace `cls` by three heads (DDCATHead) and `aux` by `aux_cls1`.

Registered: the heads semseg_psp, semseg_aspp, ddcat_psp, ddcat_aspp (last level), semseg_psp_aux and semseg_aspp_aux
(layer3), which model/architectures.py assembles under MODEL.style semseg, and the checkpoint format "semseg".
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from model.registry import HEADS, WEIGHT_FORMATS, Head, WeightFormat
from util.errors import UserError


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel // 2)
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _classifier(cin: int, channels: int, classes: int, kernel: int, dropout: float) -> nn.Sequential:
    """conv (kernel) + BN + ReLU + Dropout2d + 1x1 conv: indices 0, 1, 2, 3, 4 as semseg's `cls` and `aux`."""
    return nn.Sequential(*_conv_bn_relu(cin, channels, kernel), nn.Dropout2d(dropout), nn.Conv2d(channels, classes, 1))


class PPM(nn.Module):
    def __init__(self, in_channels: int, bins: Sequence[int]) -> None:
        super().__init__()
        reduction = in_channels // len(bins)
        self.features = nn.ModuleList(nn.Sequential(nn.AdaptiveAvgPool2d(b), *_conv_bn_relu(in_channels, reduction, 1))
                                      for b in bins)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return torch.cat([x] + [F.interpolate(f(x), size, mode="bilinear", align_corners=True) for f in self.features],
                         1)


class SemsegPSPHead(nn.Module):
    def __init__(self, in_channels: int, classes: int, bins: Sequence[int] = (1, 2, 3, 6), dropout: float = 0.1
                 ) -> None:
        super().__init__()
        self.ppm = PPM(in_channels, bins)
        self.cls = _classifier(2 * in_channels, 512, classes, 3, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.ppm(x))


class ASPP(nn.Module):
    def __init__(self, in_channels: int, channels: int, rates: Sequence[int]) -> None:
        super().__init__()
        branches = [nn.Sequential(*_conv_bn_relu(in_channels, channels, 1))]
        branches += [nn.Sequential(*_conv_bn_relu(in_channels, channels, 3, r)) for r in rates]
        branches.append(nn.Sequential(nn.AdaptiveAvgPool2d(1), *_conv_bn_relu(in_channels, channels, 1)))
        self.convs = nn.ModuleList(branches)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = [conv(x) for conv in self.convs[:-1]]
        out.append(F.interpolate(self.convs[-1](x), x.shape[2:], mode="bilinear", align_corners=True))
        return torch.cat(out, 1)


class SemsegASPPHead(nn.Module):
    def __init__(self, in_channels: int, classes: int, rates: Sequence[int] = (6, 12, 18), dropout: float = 0.1
                 ) -> None:
        super().__init__()
        self.aspp = ASPP(in_channels, 256, rates)
        self.cls = _classifier(256 * (len(rates) + 2), 256, classes, 1, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cls(self.aspp(x))


class DDCATHead(nn.Module):
    """DDC-AT's three heads over PSPNet's PPM or DeepLabV3's ASPP (its PSPNet_DDCAT / DeepLabV3_DDCAT): `cls1` for
    clean pixels, `cls2` for adversarial ones, `mask1` (2 outputs) telling them apart. In eval mode DDC-AT's
    networks return `cls1`'s logits, which its test scripts evaluate (clean and attacked alike); this head does
    the same. Training DDC-AT (its mask labels) is not part of this project: train mode is refused."""

    def __init__(self, arch: str, in_channels: int, classes: int, bins: Sequence[int], rates: Sequence[int],
                 dropout: float = 0.1) -> None:
        super().__init__()
        if arch == "pspnet_ddcat":
            self.ppm = PPM(in_channels, bins)
            width, channels, kernel = 2 * in_channels, 512, 3
        else:
            self.aspp = ASPP(in_channels, 256, rates)
            width, channels, kernel = 256 * (len(rates) + 2), 256, 1
        self.cls1 = _classifier(width, channels, classes, kernel, dropout)
        self.mask1 = _classifier(width, channels, 2, kernel, dropout)
        self.cls2 = _classifier(width, channels, classes, kernel, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            raise RuntimeError("DDC-AT's networks are evaluated here, not trained (their mask head needs DDC-AT's "
                               "own training): use MODEL.arch pspnet or deeplabv3 to train")
        return self.cls1(self.ppm(x) if hasattr(self, "ppm") else self.aspp(x))


def semseg_aux_head(arch: str, in_channels: int, classes: int, dropout: float = 0.1) -> nn.Sequential:
    """PSPNet's aux (and DDC-AT's aux_cls1): 3x3 conv to 256; DeepLabV3's: 1x1 conv to 256."""
    return _classifier(in_channels, 256, classes, 3 if arch.startswith("pspnet") else 1, dropout)


# layer0 of semseg's ResNet: the plain stem is (conv1, bn1, relu, maxpool), the deep one (conv1, bn1, relu,
# conv2, bn2, relu, conv3, bn3, relu, maxpool)
STEMS = {False: {"0": "conv1", "1": "bn1"},
         True: {"0": "conv1", "1": "bn1", "3": "conv2", "4": "bn2", "6": "conv3", "7": "bn3"}}


# their head names -> this project's (DDC-AT: cls1, mask1, cls2 and aux_cls1)
RENAMES = (("ppm.", "head.ppm."), ("aspp.", "head.aspp."), ("cls.", "head.cls."), ("cls1.", "head.cls1."),
           ("mask1.", "head.mask1."), ("cls2.", "head.cls2."), ("aux.", "aux_head."), ("aux_cls1.", "aux_head."))


def semseg_key(key: str, deep_stem: bool) -> str | None:
    """This project's name for a semseg-style checkpoint key (without `module.`), or None if it has none."""
    m = re.match(r"layer0\.(\d+)\.(.+)$", key)
    if m:
        name = STEMS[deep_stem].get(m.group(1))
        return None if name is None else f"backbone.{name}.{m.group(2)}"
    if re.match(r"layer[1-4]\.", key):
        return f"backbone.{key}"
    for prefix, target in RENAMES:
        if key.startswith(prefix):
            return target + key[len(prefix):]
    return None


def is_semseg_state(state: dict) -> bool:
    """Whether a state dict has semseg-style names (`layer0.*`, optionally under DDP's `module.` prefix)."""
    return any(k.removeprefix("module.").startswith("layer0.") for k in state)


def from_semseg_state(state: dict[str, torch.Tensor], deep_stem: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    """A semseg/DDC-AT/release state dict renamed to this project's keys, and the keys that have no counterpart."""
    out, unmapped = {}, []
    for key, value in state.items():
        name = semseg_key(key.removeprefix("module."), deep_stem)
        if name is None:
            unmapped.append(key)
        else:
            out[name] = value
    return out, unmapped


def to_semseg_state(state: dict[str, torch.Tensor], deep_stem: bool) -> dict[str, torch.Tensor]:
    """The inverse of from_semseg_state: this project's semseg-style weights under semseg's names."""
    stem = {v: k for k, v in STEMS[deep_stem].items()}
    ddcat = any(k.startswith("head.cls1.") for k in state)
    renames = [(t, p) for p, t in RENAMES if (p == "aux_cls1.") == ddcat or not p.startswith("aux")]
    out = {}
    for key, value in state.items():
        m = re.match(r"backbone\.(conv\d|bn\d)\.(.+)$", key)
        if m:
            out[f"layer0.{stem[m.group(1)]}.{m.group(2)}"] = value
        elif key.startswith("backbone.layer"):
            out[key.removeprefix("backbone.")] = value
        else:
            prefix, target = next((p, t) for p, t in renames if key.startswith(p))
            out[target + key[len(prefix):]] = value
    return out


# ---- registration -------------------------------------------------------------------------------------------------
def _fixed_width(cfg) -> None:
    if cfg.MODEL.head_channels:
        raise UserError("MODEL.head_channels is fixed by MODEL.style semseg (PSPNet 512, DeepLabv3 256): leave it 0")


def _head(kind: str):
    def build(cfg, channels: int) -> nn.Module:
        _fixed_width(cfg)
        m, k = cfg.MODEL, cfg.DATA.classes
        if kind == "semseg_psp":
            return SemsegPSPHead(channels, k, m.psp_bins, m.dropout)
        if kind == "semseg_aspp":
            return SemsegASPPHead(channels, k, m.aspp_rates, m.dropout)
        return DDCATHead("pspnet_ddcat" if kind == "ddcat_psp" else "deeplabv3_ddcat", channels, k, m.psp_bins,
                         m.aspp_rates, m.dropout)
    return build


def _aux(arch: str):
    def build(cfg, channels: int) -> nn.Sequential:
        return semseg_aux_head(arch, channels, cfg.DATA.classes, cfg.MODEL.dropout)
    return build


for _name in ("semseg_psp", "semseg_aspp", "ddcat_psp", "ddcat_aspp"):
    HEADS.register(_name, Head(_head(_name), in_index=-1))
HEADS.register("semseg_psp_aux", Head(_aux("pspnet"), in_index=-2))
HEADS.register("semseg_aspp_aux", Head(_aux("deeplabv3"), in_index=-2))


def convert_semseg_state(weights: dict[str, torch.Tensor], cfg, where: str) -> dict[str, torch.Tensor]:
    """A semseg/DDC-AT/RP-PGD-release checkpoint (`[module.]layer0.*`, `ppm.*`, `cls.*`, `aux.*`) under this
    project's names, every key mapped; it needs MODEL.style semseg, the file's stem and architecture, and says which
    settings are missing."""
    deep = any(k.removeprefix("module.").startswith("layer0.3.") for k in weights)  # the deep stem's conv2
    need = []
    if cfg.MODEL.style != "semseg":
        need.append("MODEL.style semseg")
    if cfg.MODEL.deep_stem != deep:
        need.append(f"MODEL.deep_stem {str(deep).lower()}")
    names = [k.removeprefix("module.") for k in weights]
    arch = "deeplabv3" if any(k.startswith("aspp.") for k in names) else "pspnet"
    if any(k.startswith("cls1.") for k in names):
        arch += "_ddcat"
    if cfg.MODEL.arch != arch:
        need.append(f"MODEL.arch {arch}")
    if need:
        raise UserError(f"{where} is a semseg-style network (semseg, DDC-AT or the RP-PGD release): it needs "
                        f"{', '.join(need)}")
    renamed, unmapped = from_semseg_state(weights, deep)
    if unmapped:
        raise UserError(f"{where}: {len(unmapped)} key(s) of its semseg-style network have no counterpart here: "
                        f"{unmapped[:10]}{' ...' if len(unmapped) > 10 else ''}")
    return renamed


WEIGHT_FORMATS.register("semseg", WeightFormat(is_semseg_state, convert_semseg_state))
