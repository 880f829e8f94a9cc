"""Protocol `legacy`: the released test scripts of semseg, DDC-AT and the RP-PGD release, step for step.

Each image on its own; for each of TEST.scales its long side to round(scale * TEST.base_size) (cv2 bilinear; labels
nearest, Cityscapes' images and labels first to TEST.legacy_resize), mean-colour padding, sliding-window crops
(TEST.crop_size, stride ceil(crop * TEST.stride_rate)); a clean crop's softmax is averaged with its mirrored crop's, an
attacked crop is attacked on its own with its own crop of the labels and not mirrored; softmax probabilities (not
logits) are averaged where crops overlap, cut, resized back with cv2's bilinear rule and averaged over the scales.
Overlapping crops carry different perturbations, so there is no single adversarial image; the "logits" a legacy
prediction returns are these probabilities (float64), whose argmax is scored.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F

from engine.protocols.base import PROTOCOLS, Prediction, Protocol, image_seed, runs_of
from util.evaluation.inference import Tiling, cut_crops, pad_labels, stitch
from util.evaluation.rescale import long_side_size, resize_image, resize_labels, resize_maps


@PROTOCOLS.register("legacy")
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

    def view_settings(self) -> dict:
        s = self.settings
        return {"crop": s["crop"], "stride_rate": s["stride_rate"], "base_size": s["base_size"],
                "scales": self.scales, "resize": self.resize}

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
