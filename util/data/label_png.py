"""Label PNGs: reading the 8-bit class ids of a label file, finding values outside a range, and VOC's colour map
(the palette of VOC-style label PNGs). One implementation behind the datasets (util.data.dataset) and their
preparation (util.data.preparation)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from util.errors import UserError


def read_label_png(path: Path, where: str = "") -> np.ndarray:
    """(H, W) uint8 values of an 8-bit grey or palette PNG (a palette PNG's indices are its class ids).

    `where` (e.g. "list.txt, line 3") prefixes the error message of an unreadable or non-8-bit file.
    """
    prefix = f"{where}: " if where else ""
    try:
        with Image.open(path) as png:
            if png.mode not in ("L", "P"):
                raise UserError(f"{prefix}label '{path}' has mode {png.mode}; labels must be 8-bit single-channel "
                                "or palette PNGs of class ids")
            return np.array(png)
    except (OSError, ValueError) as exc:
        raise UserError(f"{prefix}cannot read label '{path}': {exc}") from exc


def bad_values(label: np.ndarray, num_classes: int, ignore_index: int | None = 255) -> list[int]:
    """The distinct values of `label` that are neither below `num_classes` nor `ignore_index` (sorted)."""
    bad = label >= num_classes
    if ignore_index is not None:
        bad &= label != ignore_index
    return np.unique(label[bad]).tolist()


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
