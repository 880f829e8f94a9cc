"""A checkpoint's weights under this project's names: its own as they are, another code base's renamed by the
WEIGHT_FORMATS entry that recognises it (model/registry.py), every key mapped."""
from __future__ import annotations

import torch

from model.registry import FAMILIES, WEIGHT_FORMATS


def to_project_weights(weights: dict[str, torch.Tensor], cfg, where: str) -> dict[str, torch.Tensor]:
    """`weights` renamed onto build_model(cfg)'s keys when a registered format recognises them (it raises a UserError
    naming the settings the file needs when cfg does not fit); else unchanged. `where` names the file in messages.
    A library family's weights (MODEL.arch <family>:<name>) are what its Family.weights makes of them."""
    family, sep, _ = cfg.MODEL.arch.partition(":")
    if sep:
        return FAMILIES.get(family).weights(weights, cfg, where)
    for _, fmt in WEIGHT_FORMATS.items():
        if fmt.detect(weights):
            return fmt.convert(weights, cfg, where)
    return weights
