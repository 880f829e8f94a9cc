"""The one inference function: whole image or sliding window, differentiable end to end (METHOD.md §7).

Sliding window (semseg/mmsegmentation): pad the image with the mean colour up to the crop size, cover it
with crops at stride ceil(crop * stride_rate) (the last crop of a row or column aligned to the border),
run all crops as one batch and average the logits where crops overlap. Optionally the long side is first
resized to `base_size` and the logits resized back. Everything is built from differentiable tensor ops,
so an attack can optimise one perturbation of a whole image through it.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F


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


def slide_logits(forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, crop: Sequence[int],
                 stride_rate: float, mean: Sequence[float]) -> torch.Tensor:
    """Sliding-window logits (N,K,H,W) for images x (N,3,H,W); `forward` maps crops to crop logits."""
    n, _, h, w = x.shape
    padded, (top, left) = pad_to(x, crop, mean)
    boxes = windows(padded.shape[-2], padded.shape[-1], crop, stride_rate)
    crops = torch.cat([padded[:, :, y0:y1, x0:x1] for y0, y1, x0, x1 in boxes])  # (len(boxes)*N, 3, ch, cw)
    out = forward(crops)
    k = out.shape[1]
    if len(boxes) == 1:
        logits = out
    else:
        logits = out.new_zeros(n, k, *padded.shape[-2:])
        count = torch.zeros(1, 1, *padded.shape[-2:], dtype=out.dtype, device=out.device)
        for i, (y0, y1, x0, x1) in enumerate(boxes):
            logits[:, :, y0:y1, x0:x1] += out[i * n:(i + 1) * n]
            count[:, :, y0:y1, x0:x1] += 1
        logits = logits / count
    return logits[:, :, top:top + h, left:left + w]


def infer(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, mode: str = "whole",
          crop: Sequence[int] = (473, 473), stride_rate: float = 2 / 3, mean: Sequence[float] = (0.485, 0.456, 0.406),
          base_size: int = 0) -> torch.Tensor:
    """Logits (N,K,H,W) of images x (N,3,H,W) in [0,1].

    mode "whole" runs the model on the image; "slide" runs it on crops (see module doc). base_size > 0
    first resizes the long side to base_size (bilinear), and the logits back to (H,W).
    """
    h, w = x.shape[-2:]
    if base_size > 0 and max(h, w) != base_size:
        s = base_size / max(h, w)
        x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
    if mode == "whole":
        logits = model(x)
    elif mode == "slide":
        logits = slide_logits(model, x, crop, stride_rate, mean)
    else:
        raise ValueError(f"inference mode must be 'whole' or 'slide', got '{mode}'")
    if logits.shape[-2:] != (h, w):
        logits = F.interpolate(logits, size=(h, w), mode="bilinear", align_corners=False)
    return logits
