"""Cityscapes (fine annotations): the official label table of cityscapesScripts (helpers/labels.py: 34 label ids plus
'license plate', 19 of them trained as train ids 0-18, the rest ignored as 255), its colours, and the preparation that
maps label ids to train ids.

Raw tree (--src, the two official zips gtFine_trainvaltest and leftImg8bit_trainvaltest unpacked together):
    leftImg8bit/{train,val,test}/<city>/<city>_<seq>_<frame>_leftImg8bit.png
    gtFine/{train,val}/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png     (8-bit label ids 0-33)
Prepared tree:
    leftImg8bit/<split>/<city>/*_leftImg8bit.png                 links
    gtFine/<split>/<city>/*_gtFine_labelTrainIds.png             train ids 0-18, 255 for every other label
    list/train.txt (2,975), list/val.txt (500): "image label"; list/test.txt (1,525): images only (the
    benchmark server holds the test labels)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from util.data.datasets.base import DATASETS, DatasetInfo, voc_palette
from util.data.label_png import read_label_png
from util.data.preparation import Item, Plan, check_values, require_dir
from util.errors import UserError


@dataclass(frozen=True)
class CityscapesLabel:
    """One row of the official Cityscapes label table."""
    name: str
    id: int  # value in the *_gtFine_labelIds.png files (-1: never drawn)
    train_id: int  # 255 (or -1): ignored in training and evaluation
    category: str
    category_id: int
    has_instances: bool
    ignore_in_eval: bool
    color: tuple[int, int, int]


_L = CityscapesLabel
CITYSCAPES_LABELS = (
    _L("unlabeled", 0, 255, "void", 0, False, True, (0, 0, 0)),
    _L("ego vehicle", 1, 255, "void", 0, False, True, (0, 0, 0)),
    _L("rectification border", 2, 255, "void", 0, False, True, (0, 0, 0)),
    _L("out of roi", 3, 255, "void", 0, False, True, (0, 0, 0)),
    _L("static", 4, 255, "void", 0, False, True, (0, 0, 0)),
    _L("dynamic", 5, 255, "void", 0, False, True, (111, 74, 0)),
    _L("ground", 6, 255, "void", 0, False, True, (81, 0, 81)),
    _L("road", 7, 0, "flat", 1, False, False, (128, 64, 128)),
    _L("sidewalk", 8, 1, "flat", 1, False, False, (244, 35, 232)),
    _L("parking", 9, 255, "flat", 1, False, True, (250, 170, 160)),
    _L("rail track", 10, 255, "flat", 1, False, True, (230, 150, 140)),
    _L("building", 11, 2, "construction", 2, False, False, (70, 70, 70)),
    _L("wall", 12, 3, "construction", 2, False, False, (102, 102, 156)),
    _L("fence", 13, 4, "construction", 2, False, False, (190, 153, 153)),
    _L("guard rail", 14, 255, "construction", 2, False, True, (180, 165, 180)),
    _L("bridge", 15, 255, "construction", 2, False, True, (150, 100, 100)),
    _L("tunnel", 16, 255, "construction", 2, False, True, (150, 120, 90)),
    _L("pole", 17, 5, "object", 3, False, False, (153, 153, 153)),
    _L("polegroup", 18, 255, "object", 3, False, True, (153, 153, 153)),
    _L("traffic light", 19, 6, "object", 3, False, False, (250, 170, 30)),
    _L("traffic sign", 20, 7, "object", 3, False, False, (220, 220, 0)),
    _L("vegetation", 21, 8, "nature", 4, False, False, (107, 142, 35)),
    _L("terrain", 22, 9, "nature", 4, False, False, (152, 251, 152)),
    _L("sky", 23, 10, "sky", 5, False, False, (70, 130, 180)),
    _L("person", 24, 11, "human", 6, True, False, (220, 20, 60)),
    _L("rider", 25, 12, "human", 6, True, False, (255, 0, 0)),
    _L("car", 26, 13, "vehicle", 7, True, False, (0, 0, 142)),
    _L("truck", 27, 14, "vehicle", 7, True, False, (0, 0, 70)),
    _L("bus", 28, 15, "vehicle", 7, True, False, (0, 60, 100)),
    _L("caravan", 29, 255, "vehicle", 7, True, True, (0, 0, 90)),
    _L("trailer", 30, 255, "vehicle", 7, True, True, (0, 0, 110)),
    _L("train", 31, 16, "vehicle", 7, True, False, (0, 80, 100)),
    _L("motorcycle", 32, 17, "vehicle", 7, True, False, (0, 0, 230)),
    _L("bicycle", 33, 18, "vehicle", 7, True, False, (119, 11, 32)),
    _L("license plate", -1, -1, "vehicle", 7, False, True, (0, 0, 142)),
)
del _L

CITYSCAPES_CLASSES = tuple(lab.name for lab in sorted(
    (lab for lab in CITYSCAPES_LABELS if 0 <= lab.train_id < 255), key=lambda lab: lab.train_id))


def cityscapes_train_ids() -> np.ndarray:
    """(256,) uint8 lookup table: Cityscapes label id -> train id; 255 for ignored labels and unused values."""
    table = np.full(256, 255, dtype=np.uint8)
    for lab in CITYSCAPES_LABELS:
        if lab.id >= 0:
            table[lab.id] = lab.train_id if 0 <= lab.train_id < 255 else 255
    return table


def cityscapes_palette() -> np.ndarray:
    """The official colours by train id, ignore (255) black; VOC's colour map for the unused ids."""
    colours = voc_palette(256)
    colours[255] = 0
    for lab in CITYSCAPES_LABELS:
        if 0 <= lab.train_id < 255:
            colours[lab.train_id] = lab.color
    return colours

OFFICIAL = {"list/train.txt": 2975, "list/val.txt": 500, "list/test.txt": 1525}
IMAGE_SUFFIX, LABEL_SUFFIX, OUT_SUFFIX = "_leftImg8bit.png", "_gtFine_labelIds.png", "_gtFine_labelTrainIds.png"
MAX_ID = max(lab.id for lab in CITYSCAPES_LABELS)


def read_cityscapes_label(path: Path) -> np.ndarray:
    """A *_gtFine_labelIds.png file mapped to train ids (ignored labels -> 255)."""
    ids = read_label_png(path)
    check_values(ids, MAX_ID + 1, path, f"the Cityscapes label ids 0-{MAX_ID}", ignore_index=None)
    return cityscapes_train_ids()[ids]


def _split_items(src: Path, split: str, out: Plan) -> list[str]:
    """Items of one labelled split; every label needs its image and every image its label."""
    what = "--src must hold Cityscapes' leftImg8bit/ and gtFine/ folders"
    images_dir = require_dir(src / "leftImg8bit" / split, what)
    labels_dir = require_dir(src / "gtFine" / split, what)
    keys = []
    for label in sorted(labels_dir.glob(f"*/*{LABEL_SUFFIX}")):
        stem = label.name[: -len(LABEL_SUFFIX)]
        rel = f"{split}/{label.parent.name}/{stem}"
        image = images_dir / label.parent.name / f"{stem}{IMAGE_SUFFIX}"
        if not image.is_file():
            raise UserError(f"label '{label}' has no image: '{image}' does not exist (leftImg8bit incomplete?)")
        out.items[rel] = Item(image, f"leftImg8bit/{rel}{IMAGE_SUFFIX}", label, f"gtFine/{rel}{OUT_SUFFIX}",
                              read_cityscapes_label)
        keys.append(rel)
    for image in sorted(images_dir.glob(f"*/*{IMAGE_SUFFIX}")):
        label = labels_dir / image.parent.name / f"{image.name[: -len(IMAGE_SUFFIX)]}{LABEL_SUFFIX}"
        if not label.is_file():
            raise UserError(f"image '{image}' has no label: '{label}' does not exist (gtFine incomplete?)")
    if not keys:
        raise UserError(f"no '*{LABEL_SUFFIX}' files in '{labels_dir}/<city>/' ({what})")
    return keys


def plan(src: Path, sbd: Path | None = None) -> Plan:
    """Check the raw tree and list what to prepare (nothing is written here)."""
    if sbd is not None:
        raise UserError("--sbd belongs to voc2012, not cityscapes")
    require_dir(src, "--src must hold Cityscapes' leftImg8bit/ and gtFine/ folders")
    out = Plan(official=OFFICIAL)
    for split in ("train", "val"):
        out.lists[f"list/{split}.txt"] = _split_items(src, split, out)
    test_dir = src / "leftImg8bit" / "test"
    if test_dir.is_dir():
        keys = []
        for image in sorted(test_dir.glob(f"*/*{IMAGE_SUFFIX}")):
            rel = f"test/{image.parent.name}/{image.name[: -len(IMAGE_SUFFIX)]}"
            out.items[rel] = Item(image, f"leftImg8bit/{rel}{IMAGE_SUFFIX}")
            keys.append(rel)
        out.lists["list/test.txt"] = keys
    else:
        out.notes.append(f"no '{test_dir}': list/test.txt (test images for the benchmark server) is not written")
        out.not_written.append("list/test.txt")
    return out


DATASETS.register("cityscapes", DatasetInfo(
    name="cityscapes", classes=CITYSCAPES_CLASSES, palette=cityscapes_palette(), plan=plan,
    lists={"train": "list/train.txt", "val": "list/val.txt"}, crop_size=449, base_size=1024))
