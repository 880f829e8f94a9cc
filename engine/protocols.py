"""Evaluation protocols (METHOD.md §7): how an image is predicted, clean and under attack.

- `full` (default): the configured inference (whole image or sliding window, util.evaluation.inference.infer) is one
  differentiable function of the whole image; the attack optimises one perturbation of the image through it.
- `legacy` (the released test scripts of semseg, DDC-AT and the RP-PGD release, step for step): each image on
  its own; for each of TEST.scales its long side to round(scale * TEST.base_size) (cv2 bilinear; labels nearest,
  Cityscapes' images and labels first to TEST.legacy_resize), mean-colour padding, sliding-window crops
  (TEST.crop_size, stride ceil(crop * TEST.stride_rate)); a clean crop's softmax is averaged with its mirrored
  crop's, an attacked crop is attacked on its own with its own crop of the labels and not mirrored; softmax
  probabilities (not logits) are averaged where crops overlap, cut, resized back with cv2's bilinear rule and
  averaged over the scales. Overlapping crops carry different perturbations, so there is no single adversarial
  image; the "logits" a legacy prediction returns are these probabilities (float64), whose argmax is scored.
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
from typing import Callable, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from attack import Attack, AttackResult
from engine.attacks import AttackSpec, build_from_spec
from engine.precision import autocast
from util.errors import UserError
from util.evaluation.inference import Inference, Tiling, cut_crops, pad_labels, stitch
from util.evaluation.rescale import long_side_size, resize_image, resize_labels, resize_maps

# on_iterate(step, logits (N,K,h,w), labels (N,h,w)): called with every judged iterate of an attacked batch (under
# legacy, of each image of it), the logits and labels being those the protocol scores (for convergence curves)
OnIterate = Callable[[int, torch.Tensor, torch.Tensor], None]


def image_seed(seed: int, *keys: int) -> int:
    """A 32-bit seed for (seed, dataset index[, crop]), decorrelated across neighbouring indices."""
    return int(np.random.SeedSequence([seed, *keys]).generate_state(1)[0])


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
    # for pictures: the view's clean images (N,3,h,w), the adversarial ones and RP-PGD's final region map (N,h,w)
    # (under legacy the attacked crops of the first scale pasted together: overlapping crops differ, so this is
    # for display only)
    images: torch.Tensor | None = None
    adv: torch.Tensor | None = None
    regions: torch.Tensor | None = None


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
        return Prediction(self._target(x), y, images=x)

    def attacked(self, attack: Attack, x: torch.Tensor, y: torch.Tensor, indices: list[int],
                 on_iterate: OnIterate | None) -> Prediction:
        """The attacked batch: the view attacked as a whole through the target, one seed per image."""
        x, y = self.view(x, y)
        result = self.attack_images(attack, x, y, indices, on_iterate)
        with torch.no_grad():
            return Prediction(self._target(result.adv), y, {k: self._target(v) for k, v in runs_of(result).items()},
                              result.zero_gradient, x, result.adv, result.extras.get("regions"))

    # ---- the interface ------------------------------------------------------------------------------------
    def describe(self) -> dict:
        """What metrics.json records about the protocol."""
        return {"name": self.name, "rule": self.rule, **self.settings, "attack_amp": self.amp,
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
        """The attack's result (adversarial images and extras, no trace) with the given seeds, its passes under
        ATTACK.amp; on_iterate sees every judged iterate."""
        with autocast(self.amp, x.device):
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
    rule = ("the released test script (semseg, DDC-AT, RP-PGD): per image and scale the long side to "
            "round(scale * base_size) (cv2 bilinear, labels nearest), mean padding, sliding crops, each crop "
            "predicted on its own (clean: softmax averaged with its horizontal flip; attacked: its own attack with "
            "its own label crop, no flip), softmax averaged over crops and scales, cv2 bilinear resize back")
    multi_scale = True

    def check(self) -> None:
        if self.settings["mode"] != "slide":
            raise ValueError("protocol legacy attacks sliding-window crops: it needs TEST.mode slide")
        if self.settings["base_size"] <= 0:
            raise ValueError("protocol legacy resizes the long side to TEST.base_size as the released scripts do: "
                             "set TEST.base_size (512 for VOC and ADE20k, 1024 for Cityscapes)")

    def describe(self) -> dict:
        out = super().describe()
        out["seeds"] += " and crop index (crops of every scale counted in order)"
        return {**out, "scales": list(self.scales), "resize": list(self.resize) or None}

    def clean(self, x, y):
        return self.each_image(x, y, lambda view, position: CropResult(self.crop_probabilities(view.crops, True)))

    def attacked(self, attack, x, y, indices, on_iterate):
        def one(view: LegacyView, position: int):
            seeds = [image_seed(self.seed, indices[position], b) for b in range(len(view.crops))]
            hook = None if on_iterate is None else (lambda step, logits: on_iterate(
                step, self.assemble(logits.detach().softmax(1), view), view.labels))
            result = self.run_attack(attack, view.crops, view.crop_labels, seeds, hook)
            runs = {k: self.crop_probabilities(v, flip=False) for k, v in runs_of(result).items()}
            stuck = len(result.zero_gradient) == len(view.crops)  # every crop's input gradient stayed zero
            return CropResult(self.crop_probabilities(result.adv, flip=False), runs, stuck, result.adv,
                              result.extras.get("regions"))
        return self.each_image(x, y, one)

    # ---- the released script's steps -----------------------------------------------------------------------
    def crop_probabilities(self, crops: torch.Tensor, flip: bool) -> torch.Tensor:
        """Softmax (B,K,ch,cw) of crops predicted one by one (batched: eval mode makes them independent); with
        `flip`, averaged with the prediction of the mirrored crop, mirrored back."""
        with torch.no_grad():
            if not flip:
                return self.model(crops).softmax(1)
            p = self.model(torch.cat([crops, crops.flip(-1)])).softmax(1)
            return (p[:len(crops)] + p[len(crops):].flip(-1)) / 2

    def each_image(self, x: torch.Tensor, y: torch.Tensor, predict: Callable[[LegacyView, int], CropResult]
                   ) -> Prediction:
        """Every image on its own (the scripts' batch 1): predict(view, batch position) gives its crops' results,
        which are assembled into the image's float64 probabilities (what the scripts take the argmax of)."""
        parts = []
        for i in range(x.shape[0]):
            view = self.view_of(x[i:i + 1], y[i:i + 1])
            r = predict(view, i)
            parts.append(Prediction(self.assemble(r.probs, view), view.labels,
                                    {k: self.assemble(v, view) for k, v in r.runs.items()}, [i] if r.stuck else [],
                                    view.image, None if r.adv is None else self.paste(r.adv, view),
                                    None if r.regions is None else self.paste(r.regions, view)))

        def cat(name: str) -> torch.Tensor | None:
            values = [getattr(p, name) for p in parts]
            return None if values[0] is None else torch.cat(values)
        runs = {k: torch.cat([p.runs[k] for p in parts]) for k in parts[0].runs}
        return Prediction(cat("logits"), cat("labels"), runs, [i for p in parts for i in p.zero_gradient],
                          cat("images"), cat("adv"), cat("regions"))

    @staticmethod
    def paste(crops: torch.Tensor, view: LegacyView) -> torch.Tensor:
        """The first scale's crops (its B crops of (C,ch,cw) or (ch,cw)) pasted in order onto the view (a later crop
        covers an earlier one where they overlap), the padding cut off, resized to the view (torch, on the crops'
        device: no host copy on the evaluation path; bilinear for images, nearest for region maps): for pictures
        only."""
        tiling = view.tilings[0]
        maps = crops[:len(tiling.boxes)]
        maps = maps if maps.dim() == 4 else maps[:, None]
        canvas = maps.new_zeros((1, maps.shape[1], *tiling.padded))
        for b, (y0, y1, x0, x1) in enumerate(tiling.boxes):
            canvas[0, :, y0:y1, x0:x1] = maps[b]
        top, left = tiling.offset
        canvas = canvas[..., top:top + tiling.size[0], left:left + tiling.size[1]]
        if tuple(canvas.shape[-2:]) == tuple(view.size):
            return canvas if crops.dim() == 4 else canvas[:, 0]
        if crops.dim() == 4:
            return F.interpolate(canvas, size=view.size, mode="bilinear", align_corners=False)
        return F.interpolate(canvas.float(), size=view.size, mode="nearest")[:, 0].to(crops.dtype)

    def view_of(self, x: torch.Tensor, y: torch.Tensor) -> LegacyView:
        """One image (1,3,H,W) with labels (1,H,W) cut as the scripts cut it, over all scales in order."""
        s = self.settings
        original = y
        if self.resize:  # the Cityscapes scripts: the image to 1024x512 first, and the labels scored at that size
            x, y = resize_image(x, self.resize), resize_labels(y, self.resize)
        h, w = x.shape[-2:]
        crops, crop_labels, tilings = [], [], []
        for scale in self.scales:
            size = long_side_size(h, w, round(scale * s["base_size"]))
            image_crops, tiling = cut_crops(resize_image(x, size), s["crop"], s["stride_rate"], s["mean"])
            # a scale's label crops come from the original labels resized straight to that scale, as in the scripts
            padded = pad_labels(resize_labels(original, size), s["crop"], self.ignore_index)
            crops.append(image_crops)
            crop_labels += [padded[:, y0:y1, x0:x1] for y0, y1, x0, x1 in tiling.boxes]
            tilings.append(tiling)
        return LegacyView(torch.cat(crops), torch.cat(crop_labels), tilings, (h, w), y, x)

    @staticmethod
    def assemble(probs: torch.Tensor, view: LegacyView) -> torch.Tensor:
        """The image's class probabilities (1,K,h,w) from its crops' (B,K,ch,cw): per scale averaged where crops
        overlap (in float64, as the scripts accumulate), the padding cut off and resized back with cv2's bilinear
        rule; then averaged over the scales."""
        total, start = 0, 0
        for tiling in view.tilings:
            part = stitch(probs[start:start + len(tiling.boxes)].double(), tiling)
            start += len(tiling.boxes)
            total = total + resize_maps(part, view.size)
        return total / len(view.tilings)


class LegacyView(NamedTuple):
    """One image as protocol legacy predicts it: its crops over every scale, in order, and how to put them back."""
    crops: torch.Tensor         # (B,3,ch,cw)
    crop_labels: torch.Tensor   # (B,ch,cw): each crop's own labels, padded with ignore
    tilings: list[Tiling]       # one per scale, B crops in all
    size: tuple[int, int]       # (h, w) the probabilities are resized back to
    labels: torch.Tensor        # (1,h,w): the labels scored
    image: torch.Tensor         # (1,3,h,w): the image they belong to


class CropResult(NamedTuple):
    """What protocol legacy gets for one image's crops: their probabilities (B,K,ch,cw), each run's, whether every
    crop's input gradient stayed zero, and for pictures the adversarial crops and RP-PGD's region crops."""
    probs: torch.Tensor
    runs: dict[str, torch.Tensor] = {}
    stuck: bool = False
    adv: torch.Tensor | None = None
    regions: torch.Tensor | None = None


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
        return PROTOCOLS[name](model, inference_settings(cfg), cfg.ATTACK.seed, cfg.DATA.ignore_index,
                               tuple(cfg.TEST.scales), tuple(cfg.TEST.legacy_resize), cfg.ATTACK.amp)
    except ValueError as exc:
        raise UserError(f"ATTACK.protocol: {exc}") from exc
