"""What the project knows about a named dataset (DATA.name), and the registry of them.

Everything about one dataset lives in its own module beside this one: its class names and colours, how its raw
download becomes the list-file form (`plan`, run by `python -m util.data.prepare`), the lists that preparation writes
and the sizes its published recipes use. A new dataset is a module that registers a DatasetInfo and one import line
in util/data/datasets/__init__.py.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from util.data.label_png import voc_palette
from util.registry import Registry

DATASETS: Registry[DatasetInfo] = Registry("dataset", "DATA.name")


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    classes: tuple[str, ...]                         # class names by train id (the official tables)
    palette: np.ndarray = field(repr=False)          # (256, 3) uint8 colours by train id, for label pictures
    # the raw download's preparation: plan(src, sbd) -> util.data.preparation.Plan (None: nothing to prepare)
    plan: Callable[[Path, Path | None], object] | None = None
    lists: dict[str, str] = field(default_factory=dict)  # split -> list file of the prepared tree
    crop_size: int = 0                               # the training crop of the published recipes
    base_size: int = 0                               # the long side the released test scripts resize to (0: none)
    # called on one process before a run reads the data (the demo: generate it on first use)
    on_first_use: Callable[[object, object], None] | None = None


def class_names(dataset: str, num_classes: int) -> list[str]:
    """Names of a dataset's classes; numbered names for another dataset or another number of classes."""
    if dataset in DATASETS and len(DATASETS.get(dataset).classes) == num_classes:
        return list(DATASETS.get(dataset).classes)
    return [f"class_{i}" for i in range(num_classes)]


def palette(dataset: str) -> np.ndarray:
    """(256, 3) uint8 colours for label pictures of `dataset`; VOC's colour map for a dataset without its own."""
    return DATASETS.get(dataset).palette.copy() if dataset in DATASETS else voc_palette(256)
