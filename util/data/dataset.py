"""The list-file dataset (docs/design.md, Data): one sample per line of a list file.

A list file holds one "image label" pair per line, relative to DATA.data_root. Images are read with
cv2 as RGB; labels with PIL, so 8-bit grey PNGs and palette PNGs both give class ids. A sample is
(image (3,H,W) float in [0,1], label (H,W) long, index).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from util.data.datasets import DATASETS
from util.data.label_png import bad_values, read_label_png
from util.data.transform import TrainTransform
from util.errors import UserError

DATASETS_DOC = "docs/datasets.md"


@dataclass(frozen=True)
class Entry:
    image: Path
    label: Path
    list_file: Path
    line: int

    def where(self) -> str:
        return f"{self.list_file}, line {self.line}"


def read_list(data_root: str | Path, list_file: str | Path) -> list[Entry]:
    """Parse a list file (path relative to data_root) and check that every file it names exists."""
    if not str(data_root):
        raise UserError(f"DATA.data_root is not set: point it at the prepared dataset (see {DATASETS_DOC})")
    root = Path(data_root)
    if not root.is_dir():
        raise UserError(f"DATA.data_root '{root}' does not exist: prepare the dataset there with "
                        f"`python -m util.data.prepare` or point DATA.data_root at it (see {DATASETS_DOC})")
    path = root / list_file
    if not path.is_file():
        raise UserError(f"list file '{path}' does not exist (DATA.train_list/val_list; see {DATASETS_DOC})")
    entries, missing = [], []
    for number, text in enumerate(path.read_text().splitlines(), start=1):
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        parts = text.split()
        if len(parts) != 2:
            raise UserError(f"{path}, line {number}: expected 'image label', got '{text.strip()}'")
        entry = Entry(root / parts[0], root / parts[1], path, number)
        missing += [f"{entry.where()}: {kind} file '{file}' does not exist"
                    for kind, file in (("image", entry.image), ("label", entry.label)) if not file.is_file()]
        entries.append(entry)
    if missing:
        more = f" (and {len(missing) - 1} further missing file(s) in this list)" if len(missing) > 1 else ""
        raise UserError(missing[0] + more)
    if not entries:
        raise UserError(f"list file '{path}' names no images")
    return entries


def read_image(entry: Entry) -> np.ndarray:
    """(H, W, 3) uint8 RGB; an unreadable, non-image or truncated file is a UserError naming the list line.
    (cv2.imdecode refuses a truncated JPEG, where cv2.imread decodes the part it has and greys the rest.)"""
    try:
        data = entry.image.read_bytes()
    except OSError as exc:
        raise UserError(f"{entry.where()}: cannot read image '{entry.image}': {exc}") from exc
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise UserError(f"{entry.where()}: cannot read image '{entry.image}' (not an image, or truncated)")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def read_label(entry: Entry, num_classes: int, ignore_index: int) -> np.ndarray:
    """(H, W) uint8 class ids; any value that is neither a class id nor ignore_index is an error."""
    label = read_label_png(entry.label, entry.where())
    bad = bad_values(label, num_classes, ignore_index)
    if bad:
        raise UserError(f"label '{entry.label}' holds value(s) {bad[:10]}, which are neither a class id "
                        f"(0-{num_classes - 1}) nor {ignore_index} ({entry.where()})")
    return label


class SegDataset(Dataset):
    """Samples of a list file, optionally augmented by a transform drawn from (seed, epoch, index)."""

    def __init__(self, data_root: str | Path, list_file: str | Path, num_classes: int, ignore_index: int = 255,
                 transform: Callable | None = None, seed: int = 0) -> None:
        self.entries = read_list(data_root, list_file)
        self.num_classes, self.ignore_index = num_classes, ignore_index
        self.transform, self.seed, self.epoch = transform, seed, 0

    def set_epoch(self, epoch: int) -> None:
        """Choose the epoch whose augmentations __getitem__ draws (loaders re-create workers each epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int):
        entry = self.entries[index]
        image = read_image(entry)
        label = read_label(entry, self.num_classes, self.ignore_index)
        if image.shape[:2] != label.shape:
            raise UserError(f"{entry.where()}: image {image.shape[:2]} and label {label.shape} differ in size")
        if self.transform is not None:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            image, label = self.transform(image, label, rng)
        image_t = torch.from_numpy(image).permute(2, 0, 1).float().div_(255)
        return image_t, torch.from_numpy(label.astype(np.int64)), index


def split_list(cfg, split: str) -> str:
    """The list file of a split: DATA.train_list for "train", DATA.val_list for "val"."""
    return cfg.DATA.train_list if split == "train" else cfg.DATA.val_list


def build_dataset(cfg, split: str, train: bool) -> SegDataset:
    """The dataset of DATA.train_list (split "train") or DATA.val_list ("val"), augmented when `train`."""
    d, t = cfg.DATA, cfg.TRAIN
    list_file = split_list(cfg, split)
    transform = None
    if train:
        transform = TrainTransform(
            crop_size=tuple(t.crop_size), scale_range=tuple(t.scale_range), rotate_range=tuple(t.rotate_range),
            rotate_prob=t.rotate_prob, blur_prob=t.blur_prob, flip_prob=t.flip_prob,
            mean_colour=tuple(255 * m for m in d.mean), ignore_index=d.ignore_index,
        )
    return SegDataset(d.data_root, list_file, d.classes, d.ignore_index, transform, seed=cfg.EXP.seed)


def prepare_on_first_use(cfg, logger) -> None:
    """What DATA.name's dataset does before a run first reads it (the demo: generate itself); call on one process."""
    info = DATASETS.get(cfg.DATA.name)
    if info.on_first_use is not None:
        info.on_first_use(cfg, logger)
