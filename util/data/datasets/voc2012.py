"""Pascal VOC 2012 with the SBD augmentation (the 10,582-image `train_aug` set): 21 classes (background and the
devkit's 20), VOC's bit-interleaved colour map (255, the void border, in its cream colour), and the preparation.

Raw trees:
    --src VOCdevkit/VOC2012:            JPEGImages/<id>.jpg, SegmentationClass/<id>.png (palette PNGs, 0-20 and
                                        255 on object borders), ImageSets/Segmentation/{train,val}.txt
    --sbd benchmark_RELEASE/dataset:    img/<id>.jpg, cls/<id>.mat (struct GTcls, field Segmentation: 0-20),
                                        train.txt, val.txt
Prepared tree:
    JPEGImages/<id>.jpg                 links to the image of the dataset the label comes from
    SegmentationClassAug/<id>.png       8-bit grey labels: VOC's annotation for every VOC train/val image
                                        (finer, with the void border), SBD's for the others
    list/train.txt (1,464), list/val.txt (1,449), and with --sbd list/train_aug.txt (10,582):
                                        VOC train + SBD train + SBD val, minus VOC val
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import scipy.io

from util.data.datasets.base import DATASETS, DatasetInfo, voc_palette
from util.data.label_png import read_label_png
from util.data.preparation import Item, Plan, check_root, check_values, read_ids, require_dir, require_file
from util.errors import UserError

# background and the 20 object classes of the devkit (VOCinit.m)
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)

NUM_CLASSES = len(VOC_CLASSES)
OFFICIAL = {"list/train.txt": 1464, "list/val.txt": 1449, "list/train_aug.txt": 10582}
RANGE = f"the VOC class ids 0-{NUM_CLASSES - 1} and 255"


def read_voc_label(path: Path) -> np.ndarray:
    """A SegmentationClass PNG: its palette indices are the class ids (255 the void border)."""
    label = read_label_png(path)
    check_values(label, NUM_CLASSES, path, RANGE)
    return label


def read_sbd_label(path: Path) -> np.ndarray:
    """An SBD cls/<id>.mat file: GTcls.Segmentation, (H, W) class ids 0-20."""
    try:
        mat = scipy.io.loadmat(str(path), squeeze_me=True, struct_as_record=False)
    except (OSError, ValueError, TypeError, NotImplementedError) as exc:
        raise UserError(f"cannot read SBD label '{path}': {exc}") from exc
    gt = mat.get("GTcls")
    segmentation = getattr(gt, "Segmentation", None)
    if not isinstance(segmentation, np.ndarray) or segmentation.ndim != 2:
        raise UserError(f"SBD label '{path}' has no 2-D GTcls.Segmentation (is it from SBD's cls/ folder?)")
    if segmentation.min() < 0 or segmentation.max() > 255:
        raise UserError(f"label '{path}' holds value(s) outside {RANGE}: min {segmentation.min()}, "
                        f"max {segmentation.max()}")
    label = segmentation.astype(np.uint8)
    check_values(label, NUM_CLASSES, path, RANGE)
    return label


def plan(src: Path, sbd: Path | None) -> Plan:
    """Check the raw trees and list what to prepare (nothing is written here)."""
    what = "--src must be VOCdevkit/VOC2012"
    require_dir(src, what)
    check_root(src, "JPEGImages", "VOC2012", "--src")
    check_root(src, "JPEGImages", "VOCdevkit/VOC2012", "--src")
    images, labels = require_dir(src / "JPEGImages", what), require_dir(src / "SegmentationClass", what)
    splits = src / "ImageSets" / "Segmentation"
    voc = {split: read_ids(splits / f"{split}.txt", what) for split in ("train", "val")}
    out = Plan(official=OFFICIAL)

    def voc_item(name: str, split_file: Path) -> Item:
        context = f"{split_file} names '{name}'"
        return Item(require_file(images / f"{name}.jpg", f"{context}, but its image"), f"JPEGImages/{name}.jpg",
                    require_file(labels / f"{name}.png", f"{context}, but its label"),
                    f"SegmentationClassAug/{name}.png", read_voc_label)

    for split, names in voc.items():
        for name in names:
            out.items.setdefault(name, voc_item(name, splits / f"{split}.txt"))
        out.lists[f"list/{split}.txt"] = sorted(set(names))
    if sbd is None:
        out.notes.append("without --sbd there is no list/train_aug.txt, which the voc2012 configs train on: "
                         "add --sbd benchmark_RELEASE/dataset (or set DATA.train_list list/train.txt)")
        out.not_written.append("list/train_aug.txt")
        return out

    what = "--sbd must be SBD's benchmark_RELEASE/dataset"
    require_dir(sbd, what)
    check_root(sbd, "cls", "dataset", "--sbd")
    check_root(sbd, "cls", "benchmark_RELEASE/dataset", "--sbd")
    sbd_images, sbd_labels = require_dir(sbd / "img", what), require_dir(sbd / "cls", what)
    sbd_ids = {split: read_ids(sbd / f"{split}.txt", what) for split in ("train", "val")}
    val = set(voc["val"])
    train_aug = set(voc["train"])
    for split, names in sbd_ids.items():
        for name in names:
            if name in val or name in train_aug:
                continue  # VOC's own annotation of this image is used
            context = f"{sbd / f'{split}.txt'} names '{name}'"
            out.items[name] = Item(
                require_file(sbd_images / f"{name}.jpg", f"{context}, but its image"), f"JPEGImages/{name}.jpg",
                require_file(sbd_labels / f"{name}.mat", f"{context}, but its label"),
                f"SegmentationClassAug/{name}.png", read_sbd_label)
            train_aug.add(name)
    out.lists["list/train_aug.txt"] = sorted(train_aug)
    return out


DATASETS.register("voc2012", DatasetInfo(
    name="voc2012", classes=VOC_CLASSES, palette=voc_palette(256), plan=plan,
    lists={"train": "list/train_aug.txt", "val": "list/val.txt"}, crop_size=473, base_size=512))
