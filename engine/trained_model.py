"""Loading a trained model for evaluation: the config's network with a checkpoint's weights, strictly."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from model import build_model, to_project_weights
from util.checkpoint import load_checkpoint, load_model_state
from util.config import run_dir


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
    where = f"checkpoint '{path}'"
    load_model_state(model, to_project_weights(state["model"], cfg, where), where)
    return TrainedModel(model=model.to(device).eval(), path=path, epoch=state.get("epoch"))
