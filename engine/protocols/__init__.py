"""Evaluation protocols by ATTACK.protocol: full, legacy, center (docs/protocols.md); see base.py."""
from __future__ import annotations

from torch import nn

from engine.protocols import center, full, legacy  # noqa: F401  (each registers itself)
from engine.protocols.base import PROTOCOLS, OnIterate, Prediction, Protocol, image_seed, inference_settings
from engine.protocols.center import center_crop
from util.errors import UserError

__all__ = ["PROTOCOLS", "OnIterate", "Prediction", "Protocol", "build_protocol", "center_crop", "image_seed",
           "inference_settings"]


def build_protocol(cfg, model: nn.Module, surrogate=None) -> Protocol:
    """The protocol ATTACK.protocol with the TEST inference settings and ATTACK.seed; with a surrogate
    (engine.surrogate.Surrogate), its attacks run on the surrogate under the surrogate's own settings."""
    protocol = PROTOCOLS.get(cfg.ATTACK.protocol)
    try:
        built = protocol(model, inference_settings(cfg), cfg.ATTACK.seed, cfg.DATA.ignore_index,
                         tuple(cfg.TEST.scales), tuple(cfg.TEST.legacy_resize), cfg.ATTACK.amp)
    except ValueError as exc:
        raise UserError(f"ATTACK.protocol: {exc}") from exc
    if surrogate is not None:
        try:
            built.attack_through(build_protocol(surrogate.cfg, surrogate.model))
        except (ValueError, UserError) as exc:
            raise UserError(f"ATTACK.surrogate: {exc}") from exc
    return built
