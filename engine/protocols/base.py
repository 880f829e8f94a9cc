"""What every evaluation protocol shares (docs/protocols.md): how an image is predicted, clean and under attack.

A protocol checks its settings once (`check`), builds attacks on its own inference target (`attack_target`,
`build_attack`), predicts a batch clean or attacked (`predict`, a `Prediction`; by default the target on the
protocol's `view` of the images; an attack with separate runs, SEA, adds each run's logits) and describes itself
for metrics.json (`describe`). Random starts are seeded per image from (ATTACK.seed, dataset index) (per crop under
`legacy`), so results do not depend on the batch size or the number of processes. The protocols are full.py,
center.py and legacy.py beside this file; a new one is a Protocol subclass in a file of its own, registered in
PROTOCOLS under the name ATTACK.protocol takes, and one import line in engine/protocols/__init__.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from attack import Attack, AttackResult
from engine.attacks import AttackSpec, build_from_spec
from engine.precision import autocast
from util.registry import Registry

PROTOCOLS: Registry[type[Protocol]] = Registry("protocol", "ATTACK.protocol")

# on_iterate(step, logits (N,K,h,w), labels (N,h,w)): called with every judged iterate of an attacked batch (under
# legacy, of each image of it), the logits and labels being those the protocol scores (for convergence curves)
OnIterate = Callable[[int, torch.Tensor, torch.Tensor], None]


def image_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for (seed, dataset index[, crop]), decorrelated across neighbouring indices."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


@dataclass
class Prediction:
    """What a protocol predicts for a batch: the logits and the labels they are scored against, and for an attack
    with separate runs (SEA's losses) each run's logits of the same view."""
    logits: torch.Tensor                                      # (N,K,h,w)
    labels: torch.Tensor                                      # (N,h,w)
    runs: dict[str, torch.Tensor] = field(default_factory=dict)
    zero_gradient: list[int] = field(default_factory=list)    # batch positions whose input gradient stayed zero
    # for pictures: the view's clean images (N,3,h,w), the adversarial ones and RP-PGD's final region map (N,h,w)
    # (under legacy the attacked crops of the first scale pasted together: overlapping crops differ, so this is
    # for display only)
    images: torch.Tensor | None = None
    adv: torch.Tensor | None = None
    regions: torch.Tensor | None = None
    # a minimal-norm attack's own figure per image (N,) (AttackResult.extras["min_norm"]); None for other attacks
    # and under legacy, whose attacks run crop by crop
    min_norm: torch.Tensor | None = None


def inference_settings(cfg) -> dict:
    """The keyword arguments of util.evaluation.inference.infer that the config's TEST section selects."""
    t = cfg.TEST
    return {"mode": t.mode, "crop": tuple(t.crop_size), "stride_rate": t.stride_rate, "mean": tuple(cfg.DATA.mean),
            "base_size": t.base_size}


class Protocol:
    """One protocol with the TEST inference settings (inference_settings) and the seed rule."""

    name = ""
    rule = ""  # one line for metrics.json and the report
    multi_scale = False  # whether the protocol reads TEST.scales

    def __init__(self, model: nn.Module, settings: dict, seed: int = 0, ignore_index: int = 255,
                 scales: tuple[float, ...] = (1.0,), resize: tuple[int, ...] = (), amp: str = "none") -> None:
        """settings: inference_settings(cfg); scales: TEST.scales; resize: TEST.legacy_resize ((h, w) or ()), read
        by `legacy` alone; amp: ATTACK.amp, the precision of the attacks' passes (predictions stay fp32)."""
        self.model, self.settings, self.amp = model, dict(settings), amp
        self.seed, self.ignore_index = int(seed), int(ignore_index)
        self.scales, self.resize = tuple(float(v) for v in scales), tuple(resize)
        if self.scales != (1.0,) and not self.multi_scale:
            raise ValueError(f"TEST.scales (multi-scale testing, {list(self.scales)}) is part of protocol legacy; "
                             f"protocol {self.name} predicts at one scale: leave TEST.scales at [1.0]")
        self.check()
        self._target = self.attack_target()
        self._attack_on = self._target  # another model's target under transfer (attack_through)

    # ---- what a protocol defines -------------------------------------------------------------------------
    def check(self) -> None:
        """Raise ValueError when the settings do not fit the protocol."""

    def attack_target(self) -> nn.Module:
        """The module the protocol's attacks run on: the model itself unless a protocol says otherwise."""
        return self.model

    def view_settings(self) -> dict:
        """The settings that decide the view (the images an attack perturbs): none unless a protocol says
        otherwise. Transfer needs the surrogate's protocol to give the same view."""
        return {}

    def view(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels the protocol predicts and scores: the whole images unless a protocol says
        otherwise."""
        return x, y

    def clean(self, x: torch.Tensor, y: torch.Tensor) -> Prediction:
        """Clean logits (N,K,h,w) and the labels (N,h,w) they are scored against: the target on the view."""
        x, y = self.view(x, y)
        return Prediction(self._target(x), y, images=x)

    def attacked(self, attack: Attack, x: torch.Tensor, y: torch.Tensor, indices: list[int],
                 on_iterate: OnIterate | None) -> Prediction:
        """The attacked batch: the view attacked as a whole through the target, one seed per image."""
        x, y = self.view(x, y)
        result = self.attack_images(attack, x, y, indices, on_iterate)
        with torch.no_grad():
            return Prediction(self._target(result.adv), y, {k: self._target(v) for k, v in runs_of(result).items()},
                              result.zero_gradient, x, result.adv, result.extras.get("regions"),
                              result.extras.get("min_norm"))

    # ---- the interface ------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """What metrics.json records about the protocol."""
        return {"name": self.name, "rule": self.rule, **self.settings, "attack_amp": self.amp,
                "seeds": f"per image from (ATTACK.seed={self.seed}, dataset index)"}

    def build_attack(self, spec: AttackSpec, cfg) -> Attack:
        """The attack of `spec` on this protocol's inference target (the surrogate's, under transfer)."""
        return build_from_spec(spec, self._attack_on, cfg)

    def attack_through(self, surrogate: Protocol) -> None:
        """Transfer: attacks are built on the surrogate protocol's target (its model and inference settings) and
        their images scored on this one's; both must give the same view of an image."""
        if surrogate.name != self.name or surrogate.view_settings() != self.view_settings():
            raise ValueError(f"the surrogate's protocol {surrogate.name} {surrogate.view_settings() or ''} must give "
                             f"the view of the evaluated protocol {self.name} {self.view_settings() or ''}: set its "
                             f"ATTACK.protocol and TEST view settings alike")
        self._attack_on = surrogate._target

    def predict(self, x: torch.Tensor, y: torch.Tensor, indices: list[int], attack: Attack | None = None,
                on_iterate: OnIterate | None = None) -> Prediction:
        """Logits (N,K,h,w) and scored labels (N,h,w) of images x (N,3,H,W) with labels y (N,H,W) and dataset
        indices: clean when attack is None, else under an attack from build_attack."""
        if attack is None:
            with torch.no_grad():
                return self.clean(x, y)
        if attack.model is not self._attack_on:
            raise ValueError(f"protocol {self.name}: build the attack with protocol.build_attack")
        return self.attacked(attack, x, y, indices, on_iterate)

    def run_attack(self, attack: Attack, x: torch.Tensor, y: torch.Tensor, seeds: list[int],
                   on_iterate: Callable[[int, torch.Tensor], None] | None) -> AttackResult:
        """The attack's result (adversarial images and extras, no trace) with the given seeds, its passes under
        ATTACK.amp; on_iterate sees every judged iterate."""
        with autocast(self.amp, x.device):
            return attack.run(x, y, trace=False, on_iterate=on_iterate, seeds=seeds)

    def attack_images(self, attack: Attack, x: torch.Tensor, y: torch.Tensor, indices: list[int],
                      on_iterate: OnIterate | None) -> AttackResult:
        """The attack's result, one seed per image from (seed, dataset index); on_iterate sees labels y."""
        hook = None if on_iterate is None else (lambda step, logits: on_iterate(step, logits, y))
        return self.run_attack(attack, x, y, [image_seed(self.seed, i) for i in indices], hook)


def runs_of(result: AttackResult) -> dict[str, torch.Tensor]:
    """The adversarial images of each of an attack's separate runs (SEA's losses; none for other attacks)."""
    return result.extras.get("runs", {})
