"""Per-class pixel counts of a training list (MCE-Bal's class weights, docs/method.md §5), computed once and cached.

The cache is a JSON file next to the run outputs (<EXP.root>/<DATA.name>/class_counts.json), valid while the
list file's path, size and modification time and the class count match; the dataset folder is never written.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from tqdm import tqdm

from util.data.dataset import read_label, read_list


def count_pixels(data_root: str | Path, list_file: str | Path, num_classes: int, ignore_index: int = 255
                 ) -> list[int]:
    """Pixels of each class over every label of the list (ignored pixels not counted)."""
    counts = np.zeros(num_classes, dtype=np.int64)
    for entry in tqdm(read_list(data_root, list_file), desc="counting class pixels", leave=False):
        label = read_label(entry, num_classes, ignore_index)
        counts += np.bincount(label[label != ignore_index].ravel(), minlength=num_classes)[:num_classes]
    return counts.tolist()


def class_pixel_counts(cfg) -> list[int]:
    """Counts of DATA.train_list under DATA.data_root, read from or written to the cache."""
    d = cfg.DATA
    list_path = (Path(d.data_root) / d.train_list).resolve()
    stat = list_path.stat() if list_path.is_file() else None
    key = {"list": str(list_path), "size": stat and stat.st_size, "mtime": stat and stat.st_mtime,
           "classes": d.classes, "ignore_index": d.ignore_index}
    cache = Path(cfg.EXP.root) / d.name / "class_counts.json"
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("key") == key:
                return stored["counts"]
        except (ValueError, KeyError):
            pass  # an unreadable cache is recomputed and rewritten
    counts = count_pixels(d.data_root, d.train_list, d.classes, d.ignore_index)
    cache.parent.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(f".{cache.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({"key": key, "counts": counts}, indent=1) + "\n")
    os.replace(tmp, cache)
    return counts
