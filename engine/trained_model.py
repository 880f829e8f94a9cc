"""Loading a trained model for evaluation: the config's network with a checkpoint's weights, strictly."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model import build_model
from model.semseg import from_semseg_state, is_semseg_state
from util.checkpoint import load_checkpoint, load_model_state
from util.config import run_dir
from util.errors import UserError


@dataclass
class TrainedModel:
    model: nn.Module     # in eval mode, on the requested device
    path: Path           # the checkpoint it came from
    epoch: int | None    # the epoch the checkpoint was written after


def load_trained_model(cfg, device: torch.device | str = "cpu") -> TrainedModel:
    """build_model(cfg) with the weights of TEST.model_path (default: the run's model/last.pth); MODEL.pretrained's
    ImageNet file is not read (every weight comes from the checkpoint)."""
    path = Path(cfg.TEST.model_path or run_dir(cfg) / "model" / "last.pth")
    state = load_checkpoint(path)
    model = build_model(cfg, backbone_weights=False)
    load_model_state(model, project_weights(state["model"], cfg, path), f"checkpoint '{path}'")
    return TrainedModel(model=model.to(device).eval(), path=path, epoch=state.get("epoch"))


def project_weights(weights: dict[str, torch.Tensor], cfg, path: Path) -> dict[str, torch.Tensor]:
    """A checkpoint's weights under this project's names: its own as they are; semseg/DDC-AT/RP-PGD-release ones
    (`[module.]layer0.*`, `ppm.*`, `cls.*`, `aux.*`) renamed, every key mapped, which needs MODEL.style semseg and
    the file's stem."""
    if not is_semseg_state(weights):
        return weights
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
        raise UserError(f"checkpoint '{path}' is a semseg-style network (semseg, DDC-AT or the RP-PGD release): it "
                        f"needs {', '.join(need)}")
    renamed, unmapped = from_semseg_state(weights, deep)
    if unmapped:
        raise UserError(f"checkpoint '{path}': {len(unmapped)} key(s) of its semseg-style network have no counterpart "
                        f"here: {unmapped[:10]}{' ...' if len(unmapped) > 10 else ''}")
    return renamed
