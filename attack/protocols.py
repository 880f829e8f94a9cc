"""Evaluation protocols (METHOD.md §7): how an image is predicted, clean and under attack.

- `full` (default): the configured inference (whole image or sliding window, util.inference.infer) is one
  differentiable function of the whole image; the attack optimises one perturbation of the image through it.
- `legacy` (DDC-AT and the RP-PGD release): the long side is resized to TEST.base_size, the image is cut into
  sliding-window crops (TEST.crop_size, TEST.stride_rate) and every crop is attacked on its own with its own
  crop of the labels (nearest-resized, padded with ignore); the logits of the adversarial crops are averaged
  as in clean sliding-window inference. Overlapping crops carry different perturbations, so there is no single
  adversarial image.
- `center` (SEA): the short side is resized to TEST.base_size and the centre TEST.crop_size is kept (labels
  nearest); clean and attacked predictions and the metrics are those of the crop.

Random starts are seeded per image from (ATTACK.seed, dataset index) (per crop under `legacy`), so results do
not depend on the batch size or the number of processes.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attack.base import Attack
from util.evaluation import Predict
from util.inference import Inference, cut_crops, infer, pad_labels, stitch

PROTOCOLS = ("full", "legacy", "center")


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


def center_crop(x: torch.Tensor, y: torch.Tensor, short_side: int, crop: tuple[int, int]
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """SEA's view of an image: short side resized to `short_side`, then the centre crop (at most the image)."""
    h, w = x.shape[-2:]
    s = short_side / min(h, w)
    x, y = resize_pair(x, y, (max(round(h * s), 1), max(round(w * s), 1)))
    h, w = x.shape[-2:]
    ch, cw = min(crop[0], h), min(crop[1], w)
    top, left = (h - ch) // 2, (w - cw) // 2
    return x[..., top:top + ch, left:left + cw], y[..., top:top + ch, left:left + cw]


class Protocol:
    """One protocol with the TEST inference settings (util.evaluation.inference_settings) and the seed rule.

    `target` is the module an attack is built on: Inference(model) under `full` (one image through the sliding
    window), the bare model under `legacy` (crops) and `center` (the crop). predict(attack) gives the prediction
    step of util.evaluation.evaluate: clean inference when attack is None.
    """

    def __init__(self, name: str, model: nn.Module, settings: dict, seed: int = 0, ignore_index: int = 255) -> None:
        if name not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}; got {name!r}")
        if name == "legacy" and settings["mode"] != "slide":
            raise ValueError("protocol legacy attacks sliding-window crops: it needs TEST.mode slide")
        if name == "center" and settings["base_size"] < 1:
            raise ValueError("protocol center needs TEST.base_size (the short side before the centre crop)")
        self.name, self.model, self.settings = name, model, dict(settings)
        self.seed, self.ignore_index = int(seed), int(ignore_index)
        self.target: nn.Module = Inference(model, **settings) if name == "full" else model

    def describe(self) -> dict:
        """What metrics.json records about the protocol."""
        rules = {"full": "one perturbation of the whole image, optimised through the inference below",
                 "legacy": "each sliding-window crop attacked on its own, long side resized to base_size first",
                 "center": "short side resized to base_size, centre crop of crop_size; whole-crop inference"}
        return {"name": self.name, "rule": rules[self.name], **self.settings,
                "seeds": f"per image from (ATTACK.seed={self.seed}, dataset index)"
                         + (" and crop index" if self.name == "legacy" else "")}

    def predict(self, attack: Attack | None = None) -> Predict:
        """The prediction step for evaluate(): (images, labels, dataset indices) -> (logits, scored labels)."""
        if attack is not None and attack.model is not self.target:
            raise ValueError("build the attack on protocol.target")
        step: Callable = {"full": self._full, "legacy": self._legacy, "center": self._center}[self.name]
        return lambda x, y, indices: step(attack, x, y, indices)

    def _full(self, attack: Attack | None, x: torch.Tensor, y: torch.Tensor, indices: list[int]):
        if attack is not None:
            x = attack(x, y, seeds=[image_seed(self.seed, i) for i in indices])
        with torch.no_grad():
            return self.target(x), y

    def _center(self, attack: Attack | None, x: torch.Tensor, y: torch.Tensor, indices: list[int]):
        x, y = center_crop(x, y, self.settings["base_size"], self.settings["crop"])
        if attack is not None:
            x = attack(x, y, seeds=[image_seed(self.seed, i) for i in indices])
        with torch.no_grad():
            return self.model(x), y

    def _legacy(self, attack: Attack | None, x: torch.Tensor, y: torch.Tensor, indices: list[int]):
        if attack is None:  # clean: the usual sliding-window inference
            with torch.no_grad():
                return infer(self.model, x, **self.settings), y
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
        adv = attack(crops, label_crops, seeds=seeds)
        with torch.no_grad():
            logits = stitch(self.model(adv), tiling)
        if logits.shape[-2:] != (h, w):
            logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
        return logits, y
