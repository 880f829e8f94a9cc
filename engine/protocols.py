"""Evaluation protocols (METHOD.md §7): how an image is predicted, clean and under attack.

- `full` (default): the configured inference (whole image or sliding window, util.inference.infer) is one
  differentiable function of the whole image; the attack optimises one perturbation of the image through it.
- `legacy` (DDC-AT and the RP-PGD release): the long side is resized to TEST.base_size, the image is cut into
  sliding-window crops (TEST.crop_size, TEST.stride_rate) and every crop is attacked on its own with its own
  crop of the labels (nearest-resized, padded with ignore); the logits of the adversarial crops are averaged
  as in clean sliding-window inference. Overlapping crops carry different perturbations, so there is no single
  adversarial image.
- `center` (SEA, its `_val_sync_transform`): the short side is resized to the crop size (bilinear image, nearest
  labels) and the centre square of TEST.crop_size is kept; clean and attacked predictions and the metrics are
  those of the crop.

A protocol checks its settings once (`check`), builds attacks on its own inference target (`attack_target`,
`build_attack`), predicts a batch clean or attacked (`predict`, a `Prediction`; by default the target on the
protocol's `view` of the images; an attack with separate runs, SEA, adds each run's logits) and describes itself
for metrics.json (`describe`). Random starts are seeded per image from
(ATTACK.seed, dataset index) (per crop under `legacy`), so results do not depend on the batch size or the
number of processes. A new protocol is one Protocol subclass and one entry in PROTOCOLS.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attack import Attack, AttackResult
from engine.attacks import AttackSpec, build_from_spec
from util.errors import UserError
from util.inference import Inference, cut_crops, infer, pad_labels, stitch

# on_iterate(step, logits (N,K,h,w), labels (N,h,w)): called with every judged iterate of an attacked batch, the
# logits and labels being those the protocol scores (for convergence curves)
OnIterate = Callable[[int, torch.Tensor, torch.Tensor], None]


def image_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for (seed, dataset index[, crop]), decorrelated across neighbouring indices."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


def resize_pair(x: torch.Tensor, y: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Images bilinear, labels nearest, to size (h, w)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x, y
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
    y = F.interpolate(y[:, None].float(), size=size, mode="nearest")[:, 0].long()
    return x, y


def center_crop(x: torch.Tensor, y: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """SEA's view of an image (its `_val_sync_transform`): the short side resized to `size` (the long side to
    int(long * size / short)), images bilinear with PIL's antialiasing, labels nearest as PIL picks them, then the
    centre size x size square, its corner at int(round(offset / 2)) (Python's rounding, halves to even)."""
    h, w = x.shape[-2:]
    oh, ow = (size, int(1.0 * w * size / h)) if w > h else (int(1.0 * h * size / w), size)
    if (oh, ow) != (h, w):
        x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False, antialias=True)
        y = F.interpolate(y[:, None].float(), size=(oh, ow), mode="nearest-exact")[:, 0].long()
    top, left = int(round((oh - size) / 2.0)), int(round((ow - size) / 2.0))
    return x[..., top:top + size, left:left + size], y[..., top:top + size, left:left + size]


@dataclass
class Prediction:
    """What a protocol predicts for a batch: the logits and the labels they are scored against, and for an attack
    with separate runs (SEA's losses) each run's logits of the same view."""
    logits: torch.Tensor                                      # (N,K,h,w)
    labels: torch.Tensor                                      # (N,h,w)
    runs: dict[str, torch.Tensor] = field(default_factory=dict)
    zero_gradient: list[int] = field(default_factory=list)    # batch positions whose input gradient stayed zero


def inference_settings(cfg) -> dict:
    """The keyword arguments of util.inference.infer that the config's TEST section selects."""
    t = cfg.TEST
    return {"mode": t.mode, "crop": tuple(t.crop_size), "stride_rate": t.stride_rate, "mean": tuple(cfg.DATA.mean),
            "base_size": t.base_size}


class Protocol:
    """One protocol with the TEST inference settings (inference_settings) and the seed rule."""

    name = ""
    rule = ""  # one line for metrics.json and the report

    def __init__(self, model: nn.Module, settings: dict, seed: int = 0, ignore_index: int = 255) -> None:
        self.model, self.settings = model, dict(settings)
        self.seed, self.ignore_index = int(seed), int(ignore_index)
        self.check()
        self._target = self.attack_target()

    # ---- what a protocol defines -------------------------------------------------------------------------
    def check(self) -> None:
        """Raise ValueError when the settings do not fit the protocol."""

    def attack_target(self) -> nn.Module:
        """The module the protocol's attacks run on: the model itself unless a protocol says otherwise."""
        return self.model

    def view(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The images and labels the protocol predicts and scores: the whole images unless a protocol says
        otherwise."""
        return x, y

    def clean(self, x: torch.Tensor, y: torch.Tensor) -> Prediction:
        """Clean logits (N,K,h,w) and the labels (N,h,w) they are scored against: the target on the view."""
        x, y = self.view(x, y)
        return Prediction(self._target(x), y)

    def attacked(self, attack: Attack, x: torch.Tensor, y: torch.Tensor, indices: list[int],
                 on_iterate: OnIterate | None) -> Prediction:
        """The attacked batch: the view attacked as a whole through the target, one seed per image."""
        x, y = self.view(x, y)
        result = self.attack_images(attack, x, y, indices, on_iterate)
        with torch.no_grad():
            return Prediction(self._target(result.adv), y, {k: self._target(v) for k, v in runs_of(result).items()},
                              result.zero_gradient)

    # ---- the interface ------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """What metrics.json records about the protocol."""
        return {"name": self.name, "rule": self.rule, **self.settings,
                "seeds": f"per image from (ATTACK.seed={self.seed}, dataset index)"}

    def build_attack(self, spec: AttackSpec, cfg) -> Attack:
        """The attack of `spec` on this protocol's inference target."""
        return build_from_spec(spec, self._target, cfg)

    def predict(self, x: torch.Tensor, y: torch.Tensor, indices: list[int], attack: Attack | None = None,
                on_iterate: OnIterate | None = None) -> Prediction:
        """Logits (N,K,h,w) and scored labels (N,h,w) of images x (N,3,H,W) with labels y (N,H,W) and dataset
        indices: clean when attack is None, else under an attack from build_attack."""
        if attack is None:
            with torch.no_grad():
                return self.clean(x, y)
        if attack.model is not self._target:
            raise ValueError(f"protocol {self.name}: build the attack with protocol.build_attack")
        return self.attacked(attack, x, y, indices, on_iterate)

    def run_attack(self, attack: Attack, x: torch.Tensor, y: torch.Tensor, seeds: list[int],
                   on_iterate: Callable[[int, torch.Tensor], None] | None) -> AttackResult:
        """The attack's result (adversarial images and extras, no trace) with the given seeds; on_iterate sees
        every judged iterate."""
        return attack.run(x, y, trace=False, on_iterate=on_iterate, seeds=seeds)

    def attack_images(self, attack: Attack, x: torch.Tensor, y: torch.Tensor, indices: list[int],
                      on_iterate: OnIterate | None) -> AttackResult:
        """The attack's result, one seed per image from (seed, dataset index); on_iterate sees labels y."""
        hook = None if on_iterate is None else (lambda step, logits: on_iterate(step, logits, y))
        return self.run_attack(attack, x, y, [image_seed(self.seed, i) for i in indices], hook)


class Full(Protocol):
    name = "full"
    rule = "one perturbation of the whole image, optimised through the inference below"

    def attack_target(self) -> nn.Module:
        return Inference(self.model, **self.settings)


class Center(Protocol):
    name = "center"
    rule = "short side resized to the crop size, centre square of crop_size (SEA's); whole-crop inference"

    def check(self) -> None:
        crop = self.settings["crop"]
        if crop[0] != crop[1]:
            raise ValueError(f"protocol center evaluates SEA's centre square: TEST.crop_size must be square (e.g. "
                             f"[473, 473]); got {list(crop)}")

    def view(self, x, y):
        return center_crop(x, y, self.settings["crop"][0])


class Legacy(Protocol):
    name = "legacy"
    rule = "each sliding-window crop attacked on its own, long side resized to base_size first"

    def check(self) -> None:
        if self.settings["mode"] != "slide":
            raise ValueError("protocol legacy attacks sliding-window crops: it needs TEST.mode slide")

    def describe(self) -> dict:
        out = super().describe()
        out["seeds"] += " and crop index"
        return out

    def clean(self, x, y):  # the usual sliding-window inference
        return Prediction(infer(self.model, x, **self.settings), y)

    def attacked(self, attack, x, y, indices, on_iterate):
        s = self.settings
        h, w = x.shape[-2:]
        xs, ys = x, y
        if s["base_size"] > 0 and max(h, w) != s["base_size"]:
            r = s["base_size"] / max(h, w)
            xs, ys = resize_pair(x, y, (round(h * r), round(w * r)))
        crops, tiling = cut_crops(xs, s["crop"], s["stride_rate"], s["mean"])
        padded_labels = pad_labels(ys, s["crop"], self.ignore_index)
        label_crops = torch.cat([padded_labels[:, y0:y1, x0:x1] for y0, y1, x0, x1 in tiling.boxes])
        n = x.shape[0]  # crops are crop-major: crop b of image i is at b * n + i
        seeds = [image_seed(self.seed, indices[i], b) for b in range(len(tiling.boxes)) for i in range(n)]

        def whole(crop_logits: torch.Tensor) -> torch.Tensor:
            logits = stitch(crop_logits, tiling)
            if logits.shape[-2:] != (h, w):
                logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
            return logits

        hook = None if on_iterate is None else (lambda step, logits: on_iterate(step, whole(logits), y))
        result = self.run_attack(attack, crops, label_crops, seeds, hook)
        zero = set(result.zero_gradient)  # an image whose every crop had a zero gradient
        stuck = [i for i in range(n) if all(b * n + i in zero for b in range(len(tiling.boxes)))]
        with torch.no_grad():
            return Prediction(whole(self.model(result.adv)), y,
                              {k: whole(self.model(v)) for k, v in runs_of(result).items()}, stuck)


def runs_of(result: AttackResult) -> dict[str, torch.Tensor]:
    """The adversarial images of each of an attack's separate runs (SEA's losses; none for other attacks)."""
    return result.extras.get("runs", {})


PROTOCOLS: dict[str, type[Protocol]] = {"full": Full, "legacy": Legacy, "center": Center}


def build_protocol(cfg, model: nn.Module) -> Protocol:
    """The protocol ATTACK.protocol with the TEST inference settings and ATTACK.seed."""
    name = cfg.ATTACK.protocol
    if name not in PROTOCOLS:
        raise UserError(f"ATTACK.protocol must be one of {', '.join(PROTOCOLS)}; got {name!r}")
    try:
        return PROTOCOLS[name](model, inference_settings(cfg), cfg.ATTACK.seed, cfg.DATA.ignore_index)
    except ValueError as exc:
        raise UserError(f"ATTACK.protocol: {exc}") from exc
