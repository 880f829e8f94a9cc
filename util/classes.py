"""Class names and colour palettes of the datasets, used by data generation, reports and pictures."""
from __future__ import annotations

import numpy as np

DEMO_CLASSES = ("background", "disc", "square", "triangle", "ring", "star", "cross")


def voc_palette(n: int = 256) -> np.ndarray:
    """Pascal VOC's colour map: (n, 3) uint8, class id -> RGB (bit interleaving of the id)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        palette[i] = (r, g, b)
    return palette


def class_names(dataset: str, num_classes: int) -> list[str]:
    """Names of a dataset's classes; numbered names for a dataset without a table."""
    table = {"demo": DEMO_CLASSES}.get(dataset)
    if table is not None and len(table) == num_classes:
        return list(table)
    return [f"class_{i}" for i in range(num_classes)]


def palette(dataset: str) -> np.ndarray:
    """(256, 3) uint8 colours for label pictures of `dataset` (VOC's colour map; ignore 255 drawn white)."""
    colours = voc_palette(256)
    colours[255] = (255, 255, 255)
    return colours
