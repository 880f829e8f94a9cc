"""The resizes of the released test scripts (semseg, DDC-AT, the RP-PGD release), done with cv2 as they do them.

Protocol `legacy` (engine/protocols/legacy.py) rescales each image before its crops are predicted or attacked, and
resizes the averaged class probabilities back, outside anything an attack differentiates: so these are plain
cv2 calls on host copies, which gives the scripts' pixels (cv2's bilinear and nearest rules, not torch's).
"""
from __future__ import annotations

import cv2
import numpy as np
import torch


def long_side_size(h: int, w: int, long_size: int) -> tuple[int, int]:
    """(h, w) with the long side at `long_size` and the other scaled by Python's round (halves to even), as the
    scripts' `test()` computes it; a square image takes long_size on both sides."""
    if h > w:
        return long_size, round(long_size / float(h) * w)
    return round(long_size / float(w) * h), long_size


def resize_image(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Images (N,3,H,W) resized to size (h, w) with cv2's bilinear rule (INTER_LINEAR, no antialiasing), each
    image on its own; the same tensor when the size is already (h, w)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    out = [cv2.resize(image.permute(1, 2, 0).cpu().numpy(), (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
           for image in x.detach()]
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).to(x.device, x.dtype).contiguous()


def resize_labels(y: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Labels (N,H,W) resized to size (h, w) with cv2's nearest rule (INTER_NEAREST) on 8-bit copies, as the
    scripts resize their uint8 label maps; the same tensor when the size is already (h, w)."""
    if tuple(y.shape[-2:]) == tuple(size):
        return y
    if y.numel() and (int(y.min()) < 0 or int(y.max()) > 255):
        raise ValueError("labels must fit in 8 bits to be resized as the released scripts resize them")
    out = [cv2.resize(label.cpu().numpy().astype(np.uint8), (size[1], size[0]), interpolation=cv2.INTER_NEAREST)
           for label in y]
    return torch.from_numpy(np.stack(out)).to(y.device, torch.long)


def resize_maps(p: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Per-class maps (N,K,H,W) (the scripts' float64 probabilities) resized to size (h, w) with cv2's bilinear
    rule, channels in groups of at most 512 (cv2's channel limit); the same tensor when the size is (h, w)."""
    if tuple(p.shape[-2:]) == tuple(size):
        return p
    images = []
    for maps in p.detach().cpu().numpy():
        groups = [cv2.resize(np.ascontiguousarray(maps[c:c + 512].transpose(1, 2, 0)), (size[1], size[0]),
                             interpolation=cv2.INTER_LINEAR).reshape(size[0], size[1], -1)
                  for c in range(0, maps.shape[0], 512)]
        images.append(np.concatenate(groups, axis=2).transpose(2, 0, 1))
    return torch.from_numpy(np.stack(images)).to(p.device)
