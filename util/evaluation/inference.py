"""The one inference function: whole image or sliding window, differentiable end to end (docs/method.md §7).

Sliding window (semseg/mmsegmentation): pad the image with the mean colour up to the crop size, cover it
with crops at stride ceil(crop * stride_rate) (the last crop of a row or column aligned to the border),
run all crops as one batch and average the logits where crops overlap. Optionally the long side is first
resized to `base_size` and the logits resized back. Everything is built from differentiable tensor ops,
so an attack can optimise one perturbation of a whole image through it.
"""
from __future__ import annotations

import math
from typing import Callable, NamedTuple, Sequence

import torch
import torch.nn.functional as F
from torch import nn


def window_starts(size: int, crop: int, stride: int) -> list[int]:
    """Start offsets along one axis of length `size` (>= crop) covered by crops of length `crop`."""
    count = max(math.ceil((size - crop) / stride), 0) + 1
    return sorted({min(i * stride, size - crop) for i in range(count)})


def windows(height: int, width: int, crop: Sequence[int], stride_rate: float) -> list[tuple[int, int, int, int]]:
    """(y0, y1, x0, x1) of every crop on an image already padded to at least the crop size."""
    ch, cw = crop
    sh, sw = math.ceil(ch * stride_rate), math.ceil(cw * stride_rate)
    return [(y, y + ch, x, x + cw) for y in window_starts(height, ch, sh) for x in window_starts(width, cw, sw)]


def pad_to(x: torch.Tensor, crop: Sequence[int], mean: Sequence[float]) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad (N,3,H,W) evenly to at least `crop` with the mean colour; returns it and the (top, left) offset."""
    h, w = x.shape[-2:]
    ph, pw = max(crop[0] - h, 0), max(crop[1] - w, 0)
    if not (ph or pw):
        return x, (0, 0)
    top, left = ph // 2, pw // 2
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return F.pad(x - m, (left, pw - left, top, ph - top)) + m, (top, left)


def pad_labels(y: torch.Tensor, crop: Sequence[int], ignore_index: int) -> torch.Tensor:
    """Pad labels (N,H,W) like pad_to pads their images, with ignore_index."""
    h, w = y.shape[-2:]
    ph, pw = max(crop[0] - h, 0), max(crop[1] - w, 0)
    if not (ph or pw):
        return y
    top, left = ph // 2, pw // 2
    return F.pad(y, (left, pw - left, top, ph - top), value=ignore_index)


class Tiling(NamedTuple):
    """Where the sliding-window crops of a batch lie: boxes on the padded image and the original region."""
    boxes: list[tuple[int, int, int, int]]  # (y0, y1, x0, x1) on the padded image
    padded: tuple[int, int]                 # padded (H, W)
    offset: tuple[int, int]                 # (top, left) of the original image inside the padded one
    size: tuple[int, int]                   # original (H, W)


def cut_crops(x: torch.Tensor, crop: Sequence[int], stride_rate: float, mean: Sequence[float]
              ) -> tuple[torch.Tensor, Tiling]:
    """Crops (B*N,3,ch,cw) of images x (N,3,H,W), crop-major (crop b of image i at b*N + i), and their Tiling."""
    padded, offset = pad_to(x, crop, mean)
    boxes = windows(padded.shape[-2], padded.shape[-1], crop, stride_rate)
    crops = torch.cat([padded[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])
    return crops, Tiling(boxes, tuple(padded.shape[-2:]), offset, tuple(x.shape[-2:]))


def stitch(out: torch.Tensor, tiling: Tiling) -> torch.Tensor:
    """Average per-crop maps (B*N,C,h,w) over the padded image and cut out the original region: (N,C,H',W').

    Maps at the crop's resolution give (N,C,H,W). Coarser maps (backbone features, h = ch/s) are placed on the
    same grid scaled by h/ch, crop offsets rounded to the nearest cell, so (H',W') ~ (H,W)*h/ch.
    """
    nb = len(tiling.boxes)
    n, c = out.shape[0] // nb, out.shape[1]
    ch, cw = tiling.boxes[0][1] - tiling.boxes[0][0], tiling.boxes[0][3] - tiling.boxes[0][2]
    ry, rx = out.shape[-2] / ch, out.shape[-1] / cw
    if nb == 1:
        total = out
    else:
        starts = [(round(y0 * ry), round(x0 * rx)) for y0, _, x0, _ in tiling.boxes]
        grid_h = max(y for y, _ in starts) + out.shape[-2]
        grid_w = max(x for _, x in starts) + out.shape[-1]
        total = out.new_zeros(n, c, grid_h, grid_w)
        count = out.new_zeros(1, 1, grid_h, grid_w)
        for b, (y, x) in enumerate(starts):
            total[:, :, y:y + out.shape[-2], x:x + out.shape[-1]] += out[b * n:(b + 1) * n]
            count[:, :, y:y + out.shape[-2], x:x + out.shape[-1]] += 1
        total = total / count
    top, left = round(tiling.offset[0] * ry), round(tiling.offset[1] * rx)
    h, w = max(round(tiling.size[0] * ry), 1), max(round(tiling.size[1] * rx), 1)
    return total[:, :, top:top + h, left:left + w]


def slide_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, crop: Sequence[int],
                 stride_rate: float, mean: Sequence[float]) -> torch.Tensor:
    """Sliding-window logits (N,K,H,W) for images x (N,3,H,W); `forward` maps crops to crop logits."""
    crops, tiling = cut_crops(x, crop, stride_rate, mean)
    return stitch(forward(crops), tiling)


def infer(model: Callable[..., torch.Tensor], x: torch.Tensor, mode: str = "whole",
          crop: Sequence[int] = (473, 473), stride_rate: float = 2 / 3, mean: Sequence[float] = (0.485, 0.456, 0.406),
          base_size: int = 0, return_dict: bool = False) -> torch.Tensor | dict:
    """Logits (N,K,H,W) of images x (N,3,H,W) in [0,1].

    mode "whole" runs the model on the image; "slide" runs it on crops (see module doc). base_size > 0
    first resizes the long side to base_size (bilinear), and the logits back to (H,W). return_dict=True
    returns {"out": logits, "feat": backbone features} (model(x, return_dict=True) must exist), the features
    stitched from the crops under "slide", at the resized scale when base_size is set.
    """
    h, w = x.shape[-2:]
    if base_size > 0 and max(h, w) != base_size:
        s = base_size / max(h, w)
        x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
    if mode not in ("whole", "slide"):
        raise ValueError(f"inference mode must be 'whole' or 'slide', got '{mode}'")
    feat = None
    if mode == "whole":
        out = model(x, return_dict=True) if return_dict else model(x)
        logits, feat = (out["out"], out["feat"]) if return_dict else (out, None)
    elif return_dict:
        crops, tiling = cut_crops(x, crop, stride_rate, mean)
        out = model(crops, return_dict=True)
        logits, feat = stitch(out["out"], tiling), stitch(out["feat"], tiling)
    else:
        logits = slide_logits(model, x, crop, stride_rate, mean)
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return {"out": logits, "feat": feat} if return_dict else logits


class Inference(nn.Module):
    """`model` seen through infer(): Inference(model, **settings)(x) gives the logits of the configured
    (whole or sliding-window) inference, so an attack optimises one perturbation of the whole image through it
    (protocol `full`). forward(x, return_dict=True) also returns the stitched features (RP-PGD)."""

    def __init__(self, model: nn.Module, **settings) -> None:
        super().__init__()
        self.model, self.settings = model, settings

    def forward(self, x: torch.Tensor, return_dict: bool = False) -> torch.Tensor | dict:
        return infer(self.model, x, return_dict=return_dict, **self.settings)
