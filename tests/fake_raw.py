"""Small fake raw downloads in each dataset's real layout, for the preparation tests.

Every label holds known values (all ids of the dataset, in columns), so each converted value can be checked.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import scipy.io
import scipy.sparse
from PIL import Image

from util.data.datasets import voc_palette

H = 6  # label rows; the columns run through the dataset's values


def write_image(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    cv2.imwrite(str(path), rgb[..., ::-1])


def write_palette_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    png = Image.fromarray(label.astype(np.uint8), mode="P")
    png.putpalette(voc_palette(256).reshape(-1).tolist())
    png.save(path)


def write_grey_png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode="L").save(path)


def columns(values: np.ndarray, shift: int, h: int = H) -> np.ndarray:
    """(h, len(values)) label whose columns hold `values` rolled by `shift`."""
    return np.tile(np.roll(values, shift), (h, 1)).astype(np.uint8)


def write_sbd_mat(path: Path, segmentation: np.ndarray) -> None:
    """An SBD cls/<id>.mat: struct GTcls with Boundaries (20x1 cell of sparse maps), Segmentation and
    CategoriesPresent, as SBD's benchmark_RELEASE/dataset/cls files hold them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    boundaries = np.empty((20, 1), dtype=object)
    for k in range(20):
        boundaries[k, 0] = scipy.sparse.csc_matrix(segmentation == k + 1)
    present = np.unique(segmentation[segmentation > 0]).astype(np.uint8).reshape(-1, 1)
    scipy.io.savemat(str(path), {"GTcls": {"Boundaries": boundaries, "Segmentation": segmentation.astype(np.uint8),
                                           "CategoriesPresent": present}})


# VOC: train a b, val c d; SBD: train b e c, val f. train_aug = {a, b, e, f} (c is VOC val).
VOC_TRAIN, VOC_VAL, SBD_TRAIN, SBD_VAL = ["2007_a", "2007_b"], ["2008_c", "2008_d"], ["2007_b", "2009_e", "2008_c"], \
    ["2010_f"]
VOC_VALUES = np.array(list(range(21)) + [255])  # every class id and the void border
SBD_VALUES = np.arange(22) % 21


def voc_label(index: int, h: int = H) -> np.ndarray:
    return columns(VOC_VALUES, index, h)


def sbd_label(index: int, h: int = H) -> np.ndarray:
    return columns(SBD_VALUES, index, h)


def fake_voc(root: Path, h: int = H, repeat: int = 1) -> tuple[Path, Path]:
    """VOCdevkit/VOC2012 and benchmark_RELEASE/dataset under `root`; labels are (h, 22 * repeat)."""
    voc, sbd = root / "VOCdevkit" / "VOC2012", root / "benchmark_RELEASE" / "dataset"
    names = sorted(set(VOC_TRAIN + VOC_VAL + SBD_TRAIN + SBD_VAL))
    for i, name in enumerate(names):
        in_voc, in_sbd = name in VOC_TRAIN + VOC_VAL, name in SBD_TRAIN + SBD_VAL
        if in_voc:
            write_image(voc / "JPEGImages" / f"{name}.jpg", h, 22 * repeat, i)
            write_palette_png(voc / "SegmentationClass" / f"{name}.png", np.tile(voc_label(i, h), (1, repeat)))
        if in_sbd:
            write_image(sbd / "img" / f"{name}.jpg", h, 22 * repeat, 100 + i)
            write_sbd_mat(sbd / "cls" / f"{name}.mat", np.tile(sbd_label(i, h), (1, repeat)))
    write_image(voc / "JPEGImages" / "2011_unlabelled.jpg", h, 22, 99)  # VOC holds many unlabelled images
    (voc / "ImageSets" / "Segmentation").mkdir(parents=True)
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(VOC_TRAIN) + "\n")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(VOC_VAL) + "\n")
    (voc / "ImageSets" / "Segmentation" / "trainval.txt").write_text("\n".join(VOC_TRAIN + VOC_VAL) + "\n")
    (sbd / "train.txt").write_text("\n".join(SBD_TRAIN) + "\n")
    (sbd / "val.txt").write_text("\n".join(SBD_VAL) + "\n")
    return voc, sbd


CITYSCAPES = {"train": {"aachen": ["aachen_000000_000019", "aachen_000001_000019"]},
              "val": {"frankfurt": ["frankfurt_000000_000294"]},
              "test": {"berlin": ["berlin_000000_000019", "berlin_000001_000019"]}}
CITYSCAPES_IDS = np.arange(34)  # every label id that the labelIds files hold


def fake_cityscapes(root: Path) -> Path:
    """A Cityscapes root with leftImg8bit/ and gtFine/ (labelIds, color and polygons files like the zips)."""
    k = 0
    for split, cities in CITYSCAPES.items():
        for city, stems in cities.items():
            for stem in stems:
                write_image(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png", H, 34, k)
                label = columns(CITYSCAPES_IDS, k) if split != "test" else np.zeros((H, 34), np.uint8)
                gt = root / "gtFine" / split / city
                write_grey_png(gt / f"{stem}_gtFine_labelIds.png", label)
                write_grey_png(gt / f"{stem}_gtFine_instanceIds.png", label)
                (gt / f"{stem}_gtFine_polygons.json").write_text("{}")
                k += 1
    return root


ADE20K = {"training": ["ADE_train_00000001", "ADE_train_00000002"], "validation": ["ADE_val_00000001"]}
ADE20K_VALUES = np.arange(151)  # 0 'other' and the 150 classes


def fake_ade20k(root: Path) -> Path:
    """ADEChallengeData2016 with images/ and annotations/ of both splits."""
    src = root / "ADEChallengeData2016"
    k = 0
    for split, names in ADE20K.items():
        for name in names:
            write_image(src / "images" / split / f"{name}.jpg", H, 151, k)
            write_grey_png(src / "annotations" / split / f"{name}.png", columns(ADE20K_VALUES, k))
            k += 1
    (src / "objectInfo150.txt").write_text("Idx\tRatio\tTrain\tVal\tName\n")
    return src
