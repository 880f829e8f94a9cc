"""Protocol `full` (this project's default): the configured inference (whole image or sliding window,
util.evaluation.inference.infer) is one differentiable function of the whole image, and the attack optimises one
perturbation of the image through it."""
from __future__ import annotations

from torch import nn

from engine.protocols.base import PROTOCOLS, Protocol
from util.evaluation.inference import Inference


@PROTOCOLS.register("full")
class Full(Protocol):
    name = "full"
    rule = "one perturbation of the whole image, optimised through the inference below"

    def attack_target(self) -> nn.Module:
        return Inference(self.model, **self.settings)
