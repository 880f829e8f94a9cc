"""ADE20k (SceneParsing, ADEChallengeData2016): 150 classes with reduce-zero-label.

Raw tree (--src ADEChallengeData2016):
    images/{training,validation}/ADE_{train,val}_<n>.jpg
    annotations/{training,validation}/ADE_{train,val}_<n>.png     (0 'other', 1-150 the classes)
Prepared tree:
    images/<split>/*.jpg                 links
    annotations/<split>/*.png            0 -> 255 (ignored), k -> k-1 (classes 0-149)
    list/training.txt (20,210), list/validation.txt (2,000)
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from util.classes import ADE20K_CLASSES
from util.errors import UserError
from util.label_png import read_label_png
from util.prepare.common import Item, Plan, check_root, check_values, require_dir

NUM_CLASSES = len(ADE20K_CLASSES)
OFFICIAL = {"list/training.txt": 20210, "list/validation.txt": 2000}


def read_ade20k_label(path: Path) -> np.ndarray:
    """An annotation PNG after reduce-zero-label: 0 -> 255, k -> k-1."""
    values = read_label_png(path)
    check_values(values, NUM_CLASSES + 1, path, f"the ADE20k values 0-{NUM_CLASSES} (0 'other', 1-{NUM_CLASSES} the "
                 "classes)", ignore_index=None)
    return np.where(values == 0, 255, values.astype(np.int16) - 1).astype(np.uint8)


def plan(src: Path, sbd: Path | None = None) -> Plan:
    """Check the raw tree and list what to prepare (nothing is written here)."""
    if sbd is not None:
        raise UserError("--sbd belongs to voc2012, not ade20k")
    what = "--src must be ADEChallengeData2016 (with images/ and annotations/)"
    require_dir(src, what)
    check_root(src, "images", "ADEChallengeData2016", "--src")
    out = Plan(official=OFFICIAL)
    for split in ("training", "validation"):
        images_dir = require_dir(src / "images" / split, what)
        labels_dir = require_dir(src / "annotations" / split, what)
        keys = []
        for label in sorted(labels_dir.glob("*.png")):
            image = images_dir / f"{label.stem}.jpg"
            if not image.is_file():
                raise UserError(f"label '{label}' has no image: '{image}' does not exist")
            key = f"{split}/{label.stem}"
            out.items[key] = Item(image, f"images/{key}.jpg", label, f"annotations/{key}.png", read_ade20k_label)
            keys.append(key)
        for image in sorted(images_dir.glob("*.jpg")):
            if not (labels_dir / f"{image.stem}.png").is_file():
                raise UserError(f"image '{image}' has no label: '{labels_dir / f'{image.stem}.png'}' does not exist")
        if not keys:
            raise UserError(f"no annotation PNGs in '{labels_dir}' ({what})")
        out.lists[f"list/{split}.txt"] = keys
    return out
