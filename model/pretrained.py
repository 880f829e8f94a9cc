"""Reading ImageNet backbone files (MODEL.pretrained) in their publishers' own layouts, and loading them strictly.

A file is read with weights_only (no code runs); a dict under `state_dict` or `model` is unwrapped; the wrappers that
robust-ImageNet code bases put around a network (DDP's `module.`, revisiting-at's `base_model.`, RobustBench's and
revisiting-at's `model.` after a `normalize` layer) are removed when every key carries them. Each backbone maps the
remaining names onto its own and calls `load_strict`, which lists what does not match (initmodel/README.md).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from util.checkpoint import read_tensors
from util.errors import UserError


def read_backbone_file(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of an ImageNet file: a plain state dict, or one under a `state_dict` or `model` entry."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"MODEL.pretrained: no such file '{path}' (see initmodel/README.md)")
    state = read_tensors(path, "MODEL.pretrained")  # a damaged file or one with pickled code: a UserError saying so
    for entry in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(entry), dict):
            state = state[entry]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"MODEL.pretrained: '{path}' does not hold a state dict")
    return state


def unwrap(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove each of `prefixes`, in order, where every key but a `normalize.*` entry carries it; the input
    normalisation the publisher wraps around the network (`normalize.mean` / `normalize.std`) is kept under those
    names. Returns the state and the prefixes removed."""
    removed = []
    for prefix in prefixes:
        keys = [k for k in state if not k.startswith("normalize.")]
        if keys and all(k.startswith(prefix) for k in keys):
            state = {k.removeprefix(prefix): v for k, v in state.items()}
            removed.append(prefix)
    return state, removed


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: str | Path, what: str,
                unused: list[str] = (), fresh: tuple[str, ...] = (), hint: str = "") -> None:
    """Load `state` (already under the module's names) into `module`: the module's keys that start with one of
    `fresh` are the only ones allowed to be missing (they keep their initialisation); any other missing key, any
    file key without a counterpart (`unused`, or a name the module lacks) and any shape mismatch is a UserError that
    lists them."""
    own = module.state_dict()
    missing = sorted(k for k in set(own) - set(state) if not k.startswith(tuple(fresh)))
    unexpected = sorted(set(unused) | (set(state) - set(own)))
    wrong = sorted(f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                   for k in set(own) & set(state) if state[k].shape != own[k].shape)
    if missing or unexpected or wrong:
        raise UserError(
            f"MODEL.pretrained: '{path}' does not match the backbone ({what}).\n"
            f"  missing keys ({len(missing)}): {short(missing)}\n"
            f"  unexpected keys ({len(unexpected)}): {short(unexpected)}\n"
            f"  shape mismatches ({len(wrong)}): {short(wrong)}{hint}")
    module.load_state_dict({**{k: v for k, v in own.items() if k not in state}, **state}, strict=True)


def short(items: list[str], limit: int = 12) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items) - limit} more)" if len(items) > limit else "") if items else "none"
