"""Cityscapes (fine annotations): label ids to the 19 train ids of the official label table.

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

from pathlib import Path

import numpy as np

from util.classes import CITYSCAPES_LABELS, cityscapes_train_ids
from util.errors import UserError
from util.label_png import read_label_png
from util.prepare.common import Item, Plan, check_values, require_dir

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
