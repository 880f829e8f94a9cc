"""ADE20k with its 151 labels kept (SEA's, Croce et al., ECCV 2024): 0 'other' is a class like the 150 others, as
SEA's ADE20K dataset reads the annotations (offset 0, 151 classes, ignore -1 never met) and as its published
UperNet-ConvNeXt and Segmenter checkpoints were trained and scored ("trained including the background class").

The same raw tree as ade20k (--src ADEChallengeData2016), prepared with the annotation values unchanged:
    python -m util.data.prepare ade20k151 --src ADEChallengeData2016      (data/ade20k151)
The published SEA recipe crops 512 (BASE_SIZE 520).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from util.data.datasets.ade20k import ADE20K_CLASSES, ADE20K_COLOURS, plan_with
from util.data.datasets.base import DATASETS, DatasetInfo, voc_palette
from util.data.label_png import read_label_png
from util.data.preparation import Plan, check_values

CLASSES = ("other", *ADE20K_CLASSES)


def read_ade20k151_label(path: Path) -> np.ndarray:
    """An annotation PNG as it is: 0 'other', 1-150 the classes."""
    values = read_label_png(path)
    check_values(values, len(CLASSES), path, f"the ADE20k values 0-{len(CLASSES) - 1}", ignore_index=None)
    return values.astype(np.uint8)


def plan(src: Path, sbd: Path | None = None) -> Plan:
    return plan_with(read_ade20k151_label, "ade20k151", src, sbd)


def palette() -> np.ndarray:
    """'other' black, then the 150 ADE20k colours; ignore (255) black."""
    colours = voc_palette(256)
    colours[0], colours[255] = 0, 0
    colours[1: 1 + len(ADE20K_COLOURS)] = ADE20K_COLOURS
    return colours


DATASETS.register("ade20k151", DatasetInfo(
    name="ade20k151", classes=CLASSES, palette=palette(), plan=plan,
    lists={"train": "list/training.txt", "val": "list/validation.txt"}, crop_size=512, base_size=520))
