"""What every dataset's preparation shares: the plan, label conversion, image links, workers, list files.

A dataset module turns the raw tree into a `Plan` (every check of the tree's structure happens there, before
anything is written); `execute` then converts the labels and links the images (each file written whole:
a temporary name, then a rename), and writes the list files last, only when every file succeeded.
"""
from __future__ import annotations

import os
import shutil
import sys
from contextlib import nullcontext
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image
from tqdm import tqdm

from util.data.label_png import bad_values
from util.errors import UserError

# A label reader: source file -> (H, W) uint8 train ids (ignore 255); raises UserError naming the file.
LabelReader = Callable[[Path], np.ndarray]


@dataclass(frozen=True)
class Item:
    """One image (and its label, unless the split has none) of the prepared dataset.

    `image_out` and `label_out` are relative to the destination root: exactly what the list files hold.
    """
    image: Path
    image_out: str
    label: Path | None = None
    label_out: str | None = None
    read_label: LabelReader | None = None


@dataclass
class Plan:
    """The items to prepare and the list files to write: {list path: [item keys in list order]}."""
    items: dict[str, Item] = field(default_factory=dict)
    lists: dict[str, list[str]] = field(default_factory=dict)
    official: dict[str, int] = field(default_factory=dict)  # list path -> number of images of the official split
    notes: list[str] = field(default_factory=list)
    # lists this dataset writes in other runs (e.g. train_aug.txt with --sbd): an older one is removed at the end
    not_written: list[str] = field(default_factory=list)


@dataclass
class Report:
    labels_written: int = 0
    labels_kept: int = 0
    images_linked: int = 0
    images_kept: int = 0
    copied: bool = False  # images copied rather than linked
    lists: dict[str, int] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)  # printed as they arise
    notes: list[str] = field(default_factory=list)  # the plan's remarks (e.g. a list that is not written)


def require_dir(path: Path, what: str) -> Path:
    """`path` if it is a folder, else a UserError naming it and what it should hold."""
    if not path.is_dir():
        raise UserError(f"{what}: folder '{path}' does not exist")
    return path


def check_root(root: Path, marker: str, nested: str, option: str) -> None:
    """Stop early, with the right path, when the user passed the folder above the expected root."""
    if not (root / marker).is_dir() and (root / nested / marker).is_dir():
        raise UserError(f"{option} '{root}' has no {marker}/ but '{root / nested}' has: pass {option} "
                        f"{root / nested}")


def read_ids(path: Path, what: str) -> list[str]:
    """The image ids of a split file (one id per line; VOC ImageSets, SBD train.txt/val.txt)."""
    if not path.is_file():
        raise UserError(f"{what}: split file '{path}' does not exist")
    ids = [line.split()[0] for line in path.read_text().splitlines() if line.strip()]
    if not ids:
        raise UserError(f"{what}: split file '{path}' names no images")
    return ids


def require_file(path: Path, what: str) -> Path:
    if not path.is_file():
        raise UserError(f"{what}: '{path}' does not exist")
    return path


def check_values(label: np.ndarray, num_classes: int, path: Path, allowed: str, ignore_index: int | None = 255
                 ) -> None:
    """Stop when `label` holds a value that is neither below `num_classes` nor `ignore_index`."""
    bad = bad_values(label, num_classes, ignore_index)
    if bad:
        raise UserError(f"label '{path}' holds value(s) {bad[:10]} outside {allowed}")


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of an image, from its header."""
    try:
        with Image.open(path) as img:
            return img.height, img.width
    except (OSError, ValueError) as exc:
        raise UserError(f"cannot read image '{path}': {exc}") from exc


def _up_to_date(out: Path, source: Path) -> bool:
    return out.is_file() and out.stat().st_mtime >= source.stat().st_mtime


def _write_label(item: Item, dst: Path) -> bool:
    """Convert one label (skipped when the output is newer than its source); True when written."""
    out = dst / item.label_out
    if _up_to_date(out, item.label):
        return False
    label = item.read_label(item.label)
    h, w = image_size(item.image)
    if label.shape != (h, w):
        raise UserError(f"label '{item.label}' is {label.shape[1]}x{label.shape[0]} (WxH) but its image "
                        f"'{item.image}' is {w}x{h}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    Image.fromarray(label.astype(np.uint8), mode="L").save(tmp, format="PNG")
    os.replace(tmp, out)
    return True


def _place_image(item: Item, dst: Path, copy: bool) -> bool:
    """Link (or copy) one image into the destination; True when something was (re)placed."""
    out = dst / item.image_out
    source = item.image.resolve()
    if copy:
        if _up_to_date(out, source) and not out.is_symlink() and out.stat().st_size == source.stat().st_size:
            return False
    elif out.is_symlink() and Path(os.readlink(out)) == source:
        return False
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}")
    if copy:
        shutil.copy2(source, tmp)
    else:
        os.symlink(source, tmp)
    os.replace(tmp, out)
    return True


def _prepare_item(args: tuple[Item, Path, bool]) -> tuple[bool | None, bool]:
    item, dst, copy = args
    written = _write_label(item, dst) if item.label is not None else None
    return written, _place_image(item, dst, copy)


def can_symlink(dst: Path) -> bool:
    """Whether the destination's file system takes symbolic links."""
    dst.mkdir(parents=True, exist_ok=True)
    probe = dst / f".symlink_probe{os.getpid()}"
    try:
        os.symlink(dst.resolve(), probe)
    except OSError:
        return False
    probe.unlink()
    return True


def check_destination(src: Path, dst: Path) -> None:
    """The prepared tree must not be written into the raw one (a second run would convert its own output)."""
    s, d = src.resolve(), dst.resolve()
    if d == s or s in d.parents:
        raise UserError(f"--dst '{dst}' lies inside --src '{src}': choose a folder outside the raw dataset "
                        "(e.g. data/<dataset>)")


def execute(plan: Plan, dst: Path, workers: int, copy: bool, desc: str) -> Report:
    """Convert labels and place images with `workers` processes, then write the lists (never a partial one)."""
    report = Report(notes=list(plan.notes))
    if not copy and not can_symlink(dst):
        copy = True
        report.warnings.append(f"the file system of '{dst}' does not take symbolic links: images are copied")
        print(f"warning: {report.warnings[-1]}", file=sys.stderr)
    report.copied = copy
    jobs = [(item, dst, copy) for item in plan.items.values()]
    # The pool starts (forks, on Linux) before tqdm starts its monitor thread.
    with (Pool(workers) if workers > 1 else nullcontext()) as pool:
        results = pool.imap_unordered(_prepare_item, jobs, chunksize=8) if pool else map(_prepare_item, jobs)
        for result in tqdm(results, total=len(jobs), desc=desc, unit="img"):
            _count(report, result)
    for name, keys in plan.lists.items():
        lines = []
        for key in keys:
            item = plan.items[key]
            lines.append(item.image_out if item.label_out is None else f"{item.image_out} {item.label_out}")
        write_text(dst / name, "\n".join(lines) + "\n")
        report.lists[name] = len(lines)
        official = plan.official.get(name)
        if official is not None and official != len(lines):
            report.warnings.append(f"{name} has {len(lines):,} images; the official split has {official:,} "
                                   "(fine for a subset; published figures use the full split)")
            print(f"warning: {report.warnings[-1]}", file=sys.stderr)
    for name in plan.not_written:
        if (dst / name).is_file():
            (dst / name).unlink()
            report.notes.append(f"removed {name} of an earlier run")
    return report


def _count(report: Report, result: tuple[bool | None, bool]) -> None:
    written, placed = result
    if written is not None:
        report.labels_written += written
        report.labels_kept += not written
    report.images_linked += placed
    report.images_kept += not placed


def write_text(path: Path, text: str) -> None:
    """Write a text file whole (temporary name, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
