"""The checkpoint format "sea": the plain state dicts that SEA's `tools/train_rob_seg.py` saves
(`torch.save(model.state_dict())`) for its UperNet-ConvNeXt (`UperNetForSemanticSegmentation`) and Segmenter
(`SegMenter`) models, renamed onto model/upernet.py + model/convnext.py and model/segmenter.py + model/vit.py.

UperNet: `backbone.downsample_layers.0.*` is the stem (`.0|1` patchify, `.stem.0|1|3|4` conv), `.1-3.*` the
downsamplings; `backbone.stages.<i>.<k>.{dwconv, norm, pwconv1, pwconv2, gamma}` the blocks (gamma (C,) is the
layer scale (C,1,1)); `backbone.norm<i>` the output norms; `decode_head.*` and `auxiliary_head.*` the heads, whose
conv-BN-ReLU units name their parts `conv` and `batch_norm` (torchvision's Conv2dNormActivation: 0 and 1).
Segmenter: `encoder.*` is the ViT and `decoder.*` the mask transformer under the same names; the encoder's ImageNet
classifier `encoder.head.*`, which Segmenter never runs, is the one entry dropped.
"""
from __future__ import annotations

import re

import torch

from model.registry import WEIGHT_FORMATS, WeightFormat
from util.errors import UserError

UNIT = {"conv": "0", "batch_norm": "1"}
BLOCK = {"dwconv": "block.0", "norm": "block.2", "pwconv1": "block.3", "pwconv2": "block.5", "gamma": "layer_scale"}
P = r"(weight|bias|running_mean|running_var|num_batches_tracked)"


def _unit(m: re.Match) -> str:  # `<conv|batch_norm>.<param>` -> `<0|1>.<param>`
    return f"{UNIT[m.group('u')]}.{m.group('p')}"


# SEA's UperNet names -> this project's: (pattern, replacement), first match wins
UPERNET = (
    (rf"backbone\.downsample_layers\.0\.stem\.(?P<n>[0134])\.{P}", r"backbone.stem.\g<n>.\2"),
    (rf"backbone\.downsample_layers\.0\.(?P<n>[01])\.{P}", r"backbone.stem.\g<n>.\2"),
    (rf"backbone\.downsample_layers\.(?P<i>[123])\.(?P<n>[01])\.{P}",
     lambda m: f"backbone.downsample.{int(m['i']) - 1}.{m['n']}.{m[3]}"),
    (r"backbone\.stages\.(?P<i>\d)\.(?P<k>\d+)\.(?P<b>dwconv|norm|pwconv1|pwconv2)\.(?P<p>weight|bias)",
     lambda m: f"backbone.stages.{m['i']}.{m['k']}.{BLOCK[m['b']]}.{m['p']}"),
    (r"backbone\.stages\.(?P<i>\d)\.(?P<k>\d+)\.gamma", r"backbone.stages.\g<i>.\g<k>.layer_scale"),
    (r"backbone\.norm(?P<i>\d)\.(?P<p>weight|bias)", r"backbone.norms.\g<i>.\g<p>"),
    (rf"decode_head\.psp_modules\.(?P<j>\d)\.1\.(?P<u>conv|batch_norm)\.(?P<p>{P[1:-1]})",
     lambda m: f"head.ppm.{m['j']}.1.{_unit(m)}"),
    (rf"decode_head\.(?P<m>bottleneck|fpn_bottleneck)\.(?P<u>conv|batch_norm)\.(?P<p>{P[1:-1]})",
     lambda m: f"head.{m['m']}.{_unit(m)}"),
    (rf"decode_head\.(?P<m>lateral|fpn)_convs\.(?P<j>\d)\.(?P<u>conv|batch_norm)\.(?P<p>{P[1:-1]})",
     lambda m: f"head.{m['m']}.{m['j']}.{_unit(m)}"),
    (r"decode_head\.classifier\.(?P<p>weight|bias)", r"head.classifier.\g<p>"),
    (rf"auxiliary_head\.convs\.0\.(?P<u>conv|batch_norm)\.(?P<p>{P[1:-1]})", lambda m: f"aux_head.0.{_unit(m)}"),
    (r"auxiliary_head\.classifier\.(?P<p>weight|bias)", r"aux_head.1.\g<p>"),
)
SEGMENTER = ((r"encoder\.(?!head\.)(?P<r>.+)", r"backbone.\g<r>"), (r"decoder\.(?P<r>.+)", r"head.\g<r>"))
DROPPED = r"encoder\.head\.(weight|bias)"  # the ViT's ImageNet classifier, unused by Segmenter

# this project's names -> SEA's
UNIT_BACK = {v: k for k, v in UNIT.items()}
BLOCK_BACK = {v: k for k, v in BLOCK.items()}
UPERNET_BACK = (
    (rf"backbone\.stem\.(?P<n>\d)\.{P}", None),  # the stem: see to_sea_state
    (rf"backbone\.downsample\.(?P<i>\d)\.(?P<n>[01])\.{P}",
     lambda m: f"backbone.downsample_layers.{int(m['i']) + 1}.{m['n']}.{m[3]}"),
    (r"backbone\.stages\.(?P<i>\d)\.(?P<k>\d+)\.(?P<b>block\.\d|layer_scale)(?P<p>\.weight|\.bias)?",
     lambda m: f"backbone.stages.{m['i']}.{m['k']}.{BLOCK_BACK[m['b']]}{m['p'] or ''}"),
    (r"backbone\.norms\.(?P<i>\d)\.(?P<p>weight|bias)", r"backbone.norm\g<i>.\g<p>"),
    (rf"head\.ppm\.(?P<j>\d)\.1\.(?P<u>[01])\.{P}",
     lambda m: f"decode_head.psp_modules.{m['j']}.1.{UNIT_BACK[m['u']]}.{m[3]}"),
    (rf"head\.(?P<m>bottleneck|fpn_bottleneck)\.(?P<u>[01])\.{P}",
     lambda m: f"decode_head.{m['m']}.{UNIT_BACK[m['u']]}.{m[3]}"),
    (rf"head\.(?P<m>lateral|fpn)\.(?P<j>\d)\.(?P<u>[01])\.{P}",
     lambda m: f"decode_head.{m['m']}_convs.{m['j']}.{UNIT_BACK[m['u']]}.{m[4]}"),
    (r"head\.classifier\.(?P<p>weight|bias)", r"decode_head.classifier.\g<p>"),
    (rf"aux_head\.0\.(?P<u>[01])\.{P}", lambda m: f"auxiliary_head.convs.0.{UNIT_BACK[m['u']]}.{m[2]}"),
    (r"aux_head\.1\.(?P<p>weight|bias)", r"auxiliary_head.classifier.\g<p>"),
)
SEGMENTER_BACK = ((r"backbone\.(?P<r>.+)", r"encoder.\g<r>"), (r"head\.(?P<r>.+)", r"decoder.\g<r>"))


def _rename(key: str, table) -> str | None:
    for pattern, replacement in table:
        m = re.fullmatch(pattern, key)
        if m:
            return m.expand(replacement) if isinstance(replacement, str) else replacement(m)
    return None


def sea_family(state: dict) -> str | None:
    """"upernet" or "segmenter" for a SEA state dict (by its top-level modules), else None."""
    tops = {k.split(".", 1)[0] for k in state}
    if {"backbone", "decode_head"} <= tops and any(k.startswith("backbone.downsample_layers.") for k in state):
        return "upernet"
    if tops == {"encoder", "decoder"} and "decoder.cls_emb" in state:
        return "segmenter"
    return None


def sea_stem(state: dict) -> str:
    return "conv" if any(k.startswith("backbone.downsample_layers.0.stem.") for k in state) else "patch"


def from_sea_state(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """SEA's state dict under this project's names, and the keys that have no counterpart."""
    family = sea_family(state)
    table = UPERNET if family == "upernet" else SEGMENTER
    out, unmapped = {}, []
    for key, value in state.items():
        if family == "segmenter" and re.fullmatch(DROPPED, key):
            continue
        name = _rename(key, table)
        if name is None:
            unmapped.append(key)
        else:
            out[name] = value.reshape(-1, 1, 1) if name.endswith(".layer_scale") else value
    return out, unmapped


def to_sea_state(state: dict[str, torch.Tensor], family: str, stem: str = "patch") -> dict[str, torch.Tensor]:
    """The inverse of from_sea_state: this project's UperNet-ConvNeXt or Segmenter weights under SEA's names (the
    Segmenter without the unused `encoder.head.*`)."""
    out = {}
    for key, value in state.items():
        if family == "segmenter":
            name = _rename(key, SEGMENTER_BACK)
        elif key.startswith("backbone.stem."):
            inner = key.removeprefix("backbone.stem.")
            name = f"backbone.downsample_layers.0.{'stem.' if stem == 'conv' else ''}{inner}"
        else:
            name = _rename(key, UPERNET_BACK)
        if name is None:
            raise KeyError(f"{key} has no name in SEA's {family}")
        out[name] = value.reshape(-1) if key.endswith(".layer_scale") else value
    return out


def convert_sea_state(weights: dict[str, torch.Tensor], cfg, where: str) -> dict[str, torch.Tensor]:
    """A SEA checkpoint under this project's names, every key mapped; it names the settings the file needs."""
    family = sea_family(weights)
    m, need = cfg.MODEL, []
    if m.arch != family:
        need.append(f"MODEL.arch {family}")
    if m.style != "sea":
        need.append("MODEL.style sea")
    backbone = "convnext" if family == "upernet" else "vit"
    if m.backbone != backbone:
        need.append(f"MODEL.backbone {backbone}")
    if family == "upernet" and m.stem != sea_stem(weights):
        need.append(f"MODEL.stem {sea_stem(weights)}")
    if need:
        raise UserError(f"{where} is SEA's {family} (a state dict as its train_rob_seg.py saves it): it needs "
                        f"{', '.join(need)}")
    renamed, unmapped = from_sea_state(weights)
    if unmapped:
        raise UserError(f"{where}: {len(unmapped)} key(s) of SEA's {family} have no counterpart here: "
                        f"{unmapped[:10]}{' ...' if len(unmapped) > 10 else ''}")
    return renamed


WEIGHT_FORMATS.register("sea", WeightFormat(lambda state: sea_family(state) is not None, convert_sea_state))
