"""Evaluation protocols by ATTACK.protocol: full, legacy, center (docs/protocols.md); see base.py."""
from __future__ import annotations

from torch import nn

from engine.protocols import center, full, legacy  # noqa: F401  (each registers itself)
from engine.protocols.base import PROTOCOLS, OnIterate, Prediction, Protocol, image_seed, inference_settings
from engine.protocols.center import center_crop
from util.errors import UserError

__all__ = ["PROTOCOLS", "OnIterate", "Prediction", "Protocol", "build_protocol", "center_crop", "image_seed",
           "inference_settings"]


def build_protocol(cfg, model: nn.Module) -> Protocol:
    """The protocol ATTACK.protocol with the TEST inference settings and ATTACK.seed."""
    protocol = PROTOCOLS.get(cfg.ATTACK.protocol)
    try:
        return protocol(model, inference_settings(cfg), cfg.ATTACK.seed, cfg.DATA.ignore_index,
                               tuple(cfg.TEST.scales), tuple(cfg.TEST.legacy_resize), cfg.ATTACK.amp)
    except ValueError as exc:
        raise UserError(f"ATTACK.protocol: {exc}") from exc
