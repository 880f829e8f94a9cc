"""The model registries: backbones, heads, architectures and checkpoint formats, each found by name.

- BACKBONES (MODEL.backbone): build(cfg, pretrained) -> a module mapping normalised images (N,3,H,W) to a list of
  feature maps, one per level, with `channels` and `strides` tuples describing the levels; `pretrained` is the path
  of an ImageNet file to load strictly, or "".
- HEADS: Head(build, in_index): build(cfg, channels) -> a module mapping the levels it reads to logits (N,K,h,w);
  in_index picks them, as mmsegmentation's in_index does (an int: one map, `channels` an int; a tuple: a list of
  maps, `channels` a list).
- ARCHITECTURES (MODEL.arch): per MODEL.style, which heads sit on the backbone (Architecture).
- FAMILIES (MODEL.arch `<family>:<name>`): families whose whole network a library or the user's code builds
  (Family; model/library/: torchvision, hf, smp, python).
- WEIGHT_FORMATS: checkpoints of other code bases (semseg, DDC-AT, the RP-PGD release, ...) recognised by their keys
  and renamed onto this project's (model/weights.py).

A model family is a module that registers its backbone, heads and architecture, and one import line in
model/__init__.py (docs/design.md, "Adding a model family").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from torch import nn

from util.registry import Registry


@dataclass(frozen=True)
class Head:
    """A decode head: build(cfg, channels) -> module, reading the backbone levels in_index."""
    build: Callable[..., nn.Module]
    in_index: int | tuple[int, ...] = -1


@dataclass(frozen=True)
class Architecture:
    """The heads of one architecture in one MODEL.style: a decode head, an optional auxiliary head (trained with
    TRAIN.aux_weight, run in training mode only), how logits are upsampled to the input, and the backbone level
    that is RP-PGD's `feat`. logits_stride 0 resizes the logits to the input; s > 0 is a network that pads its input
    to a multiple of s and returns logits at 1/s of that (Segmenter): they are upsampled by s and cropped."""
    head: str
    aux_head: str | None = None
    align_corners: bool = False
    feat_index: int = -1
    logits_stride: int = 0


@dataclass(frozen=True)
class WeightFormat:
    """A foreign checkpoint layout: detect(state) says whether a state dict is one; convert(state, cfg, where)
    returns it under this project's names (every key mapped, or a UserError naming what the file needs)."""
    detect: Callable[[dict], bool]
    convert: Callable[..., dict]


def same_keys(state: dict, cfg, where: str) -> dict:
    return state


@dataclass(frozen=True)
class Family:
    """Networks a library or the user's code builds whole (MODEL.arch <family>:<name>): build(cfg, name) -> a module
    with the model contract; weights(state, cfg, where) -> a weights file's tensors under that module's keys (a
    library whose files name keys otherwise converts them with its own loader, every key checked)."""
    build: Callable[..., nn.Module]
    weights: Callable[..., dict] = same_keys


BACKBONES: Registry[Callable[..., nn.Module]] = Registry("backbone", "MODEL.backbone")
HEADS: Registry[Head] = Registry("head")
ARCHITECTURES: Registry[dict[str, Architecture]] = Registry("architecture", "MODEL.arch")
WEIGHT_FORMATS: Registry[WeightFormat] = Registry("checkpoint format")
FAMILIES: Registry[Family] = Registry("model family", "the family of MODEL.arch <family>:<name>")
