"""Pictures of images, labels and perturbations as uint8 RGB arrays (numpy and cv2): tiles with a title, legends and
grids whose tile positions are returned, so what a tile holds can be checked pixel for pixel.

Label tiles are resized with nearest neighbour only, so they hold exactly the palette colours of their labels.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import cv2
import numpy as np
import torch
from PIL import Image

TITLE = 20            # height of a tile's title bar (px)
TILE = 256            # long side of a tile (px)
BACKGROUND = (255, 255, 255)
FONT = cv2.FONT_HERSHEY_SIMPLEX


def rgb(image: torch.Tensor) -> np.ndarray:
    """A [0,1] image (3,H,W) as (H,W,3) uint8."""
    return (image.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy() * 255 + 0.5).astype(np.uint8)


def colourise(label: np.ndarray | torch.Tensor, palette: np.ndarray) -> np.ndarray:
    """A (H,W) label map (values 0..255) as (H,W,3) uint8 in the (256,3) palette's colours."""
    label = label.cpu().numpy() if isinstance(label, torch.Tensor) else np.asarray(label)
    return palette[label.astype(np.int64)].astype(np.uint8)


def perturbation(delta: torch.Tensor, eps: float) -> tuple[np.ndarray, float]:
    """A perturbation (3,H,W) as (H,W,3) uint8: grey 128 where it is 0, +-eps at 255 / 1; returns the tile and the
    amplification (how many times larger the tile shows a change than the image does)."""
    gain = 127.0 / max(float(eps), 1e-12)
    tile = 128 + delta.detach().float().permute(1, 2, 0).cpu().numpy() * gain
    return np.clip(np.rint(tile), 0, 255).astype(np.uint8), gain / 255


def tile_size(h: int, w: int, long_side: int = TILE) -> tuple[int, int]:
    """(h, w) of a tile whose long side is `long_side`."""
    s = long_side / max(h, w)
    return max(1, round(h * s)), max(1, round(w * s))


def fit(picture: np.ndarray, size: tuple[int, int], exact: bool) -> np.ndarray:
    """Resize (H,W,3) to size (h, w): nearest when `exact` (labels: colours kept) or when enlarging (every pixel
    of an image or perturbation stays visible as a block), else area averaging."""
    if picture.shape[:2] == tuple(size):
        return picture
    mode = cv2.INTER_NEAREST if exact or size[0] >= picture.shape[0] else cv2.INTER_AREA
    return cv2.resize(picture, (size[1], size[0]), interpolation=mode)


def titled(picture: np.ndarray, title: str) -> np.ndarray:
    """The picture under a white title bar of TITLE pixels with `title` in black (cut to the width)."""
    bar = np.full((TITLE, picture.shape[1], 3), BACKGROUND, np.uint8)
    cv2.putText(bar, title, (3, TITLE - 6), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([bar, picture])


def legend(entries: Sequence[tuple[str, Sequence[int]]], width: int, title: str = "") -> np.ndarray:
    """Colour swatches with names, as many per row as fit in `width`: (h, width, 3) uint8."""
    cell_w, cell_h = 130, 18
    per_row = max(1, width // cell_w)
    rows = (len(entries) + per_row - 1) // per_row + (1 if title else 0)
    out = np.full((max(rows, 1) * cell_h + 4, width, 3), BACKGROUND, np.uint8)
    top = 0
    if title:
        cv2.putText(out, title, (3, cell_h - 5), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
        top = cell_h
    for i, (name, colour) in enumerate(entries):
        y, x = top + (i // per_row) * cell_h + 2, (i % per_row) * cell_w + 3
        cv2.rectangle(out, (x, y + 2), (x + 12, y + 14), tuple(int(c) for c in colour), -1)
        cv2.rectangle(out, (x, y + 2), (x + 12, y + 14), (0, 0, 0), 1)
        cv2.putText(out, name[:17], (x + 16, y + 13), FONT, 0.4, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def grid(rows: Sequence[Sequence[np.ndarray | None]], gap: int = 4
         ) -> tuple[np.ndarray, list[list[tuple[int, int, int, int] | None]]]:
    """Tiles (each (h,w,3), None for an empty cell) in rows and columns on a white background, each cell as large as
    the largest tile of its row and column; returns the picture and each tile's box (y0, y1, x0, x1)."""
    cols = max(len(r) for r in rows)
    heights = [max((t.shape[0] for t in r if t is not None), default=0) for r in rows]
    widths = [max((r[c].shape[1] for r in rows if c < len(r) and r[c] is not None), default=0) for c in range(cols)]
    out = np.full((sum(heights) + gap * (len(rows) + 1), sum(widths) + gap * (cols + 1), 3), BACKGROUND, np.uint8)
    boxes: list[list[tuple[int, int, int, int] | None]] = []
    y = gap
    for r, row in enumerate(rows):
        x, placed = gap, []
        for c in range(cols):
            t = row[c] if c < len(row) else None
            if t is None:
                placed.append(None)
            else:
                out[y:y + t.shape[0], x:x + t.shape[1]] = t
                placed.append((y, y + t.shape[0], x, x + t.shape[1]))
            x += widths[c] + gap
        boxes.append(placed)
        y += heights[r] + gap
    return out, boxes


def stack(parts: Sequence[np.ndarray], gap: int = 4) -> np.ndarray:
    """Pictures one under the other, left-aligned, on white."""
    width = max(p.shape[1] for p in parts)
    out = np.full((sum(p.shape[0] for p in parts) + gap * (len(parts) - 1), width, 3), BACKGROUND, np.uint8)
    y = 0
    for p in parts:
        out[y:y + p.shape[0], :p.shape[1]] = p
        y += p.shape[0] + gap
    return out


def save_png(picture: np.ndarray, path: Path) -> Path:
    """Write an (H,W,3) RGB uint8 picture as PNG (lossless: colours stay exact)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), cv2.cvtColor(picture, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {path}")
    return path


def save_colour_label(label: np.ndarray, palette: np.ndarray, path: Path) -> None:
    """A (H,W) label or prediction as a palette PNG (class ids keep their values)."""
    png = Image.fromarray(label.astype(np.uint8), mode="P")
    png.putpalette(palette.reshape(-1).tolist())
    png.save(path)
