"""MODEL.arch python:<module>:<function>: the user's own network. `<module>` is imported (it must be on the Python
path, e.g. PYTHONPATH=.) and `<function>(cfg)` returns an nn.Module mapping normalised images (N,3,H,W) to logits
(N,K,h,w) or to a dict with "out" (and optionally "aux", auxiliary logits, and "feat", RP-PGD's features). The
adapter normalises with DATA.mean/DATA.std and upsamples smaller logits bilinearly (align_corners=False).

`feat` comes from MODEL.feature_layer when set (a module of the network, by its dotted name), else from the
network's own "feat"; the head group is MODEL.head_modules (empty: every parameter at TRAIN.base_lr).
"""
from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from model.library.adapter import LibraryModel, library_model
from model.registry import FAMILIES, Family
from util.errors import UserError


def read_output(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(out, torch.Tensor):
        return out, None
    if isinstance(out, dict) and isinstance(out.get("out"), torch.Tensor):
        return out["out"], out.get("aux")
    raise ValueError(f"a python: model must return logits or a dict with 'out'; got {type(out).__name__}")


def build_python(cfg, spec: str) -> LibraryModel:
    module_name, _, function = spec.partition(":")
    if not module_name or not function:
        raise UserError(f"MODEL.arch python:{spec}: write python:<module>:<function>, e.g. python:mynets:build")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UserError(f"MODEL.arch python:{spec}: cannot import '{module_name}' ({exc}); put its folder on "
                        "PYTHONPATH") from None
    builder = getattr(module, function, None)
    if not callable(builder):
        raise UserError(f"MODEL.arch python:{spec}: module '{module_name}' has no function '{function}'")
    net = builder(cfg)
    if not isinstance(net, nn.Module):
        raise UserError(f"MODEL.arch python:{spec}: {function}(cfg) returned a {type(net).__name__}, not an nn.Module")
    return library_model(cfg, net, read_output, feature_layer="", head_modules=[],
                         origin=f"{module_name}.{function}(cfg)")


FAMILIES.register("python", Family(build_python))
