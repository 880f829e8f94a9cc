"""The published class tables (tests/data/*.tsv, from the official files) that the dataset modules must match."""
from __future__ import annotations

from pathlib import Path

DATA = Path(__file__).resolve().parent / "data"

# The 20 object classes of the Pascal VOC 2012 devkit (VOCcode/VOCinit.m, VOCopts.classes), after background 0.
VOC_DEVKIT_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
                      "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
                      "tvmonitor")


def _rows(name: str) -> list[list[str]]:
    lines = [line for line in (DATA / name).read_text().splitlines() if line and not line.startswith("#")]
    return [line.split("\t") for line in lines[1:]]  # lines[0] is the header


def cityscapes_table() -> list[dict]:
    """cityscapesScripts' label table: name, id, trainId, category, catId, hasInstances, ignoreInEval, color."""
    return [{"name": r[0], "id": int(r[1]), "trainId": int(r[2]), "category": r[3], "catId": int(r[4]),
             "hasInstances": r[5] == "True", "ignoreInEval": r[6] == "True",
             "color": tuple(int(c) for c in r[7].split(","))} for r in _rows("cityscapes_labels.tsv")]


def ade20k_table() -> list[tuple[int, str]]:
    """objectInfo150: (index in the annotation PNGs, official name)."""
    return [(int(r[0]), r[1].strip()) for r in _rows("ade20k_objectInfo150.tsv")]
