"""Protocol `center` (SEA's, its `_val_sync_transform`): the short side is resized to the crop size (bilinear image,
nearest labels) and the centre square of TEST.crop_size is kept; clean and attacked predictions and the metrics are
those of the crop."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from engine.protocols.base import PROTOCOLS, Protocol


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


@PROTOCOLS.register("center")
class Center(Protocol):
    name = "center"
    rule = "short side resized to the crop size, centre square of crop_size (SEA's); whole-crop inference"

    def check(self) -> None:
        crop = self.settings["crop"]
        if crop[0] != crop[1]:
            raise ValueError(f"protocol center evaluates SEA's centre square: TEST.crop_size must be square (e.g. "
                             f"[473, 473]); got {list(crop)}")

    def view_settings(self) -> dict:
        return {"crop": self.settings["crop"]}

    def view(self, x, y):
        return center_crop(x, y, self.settings["crop"][0])
