"""The generated demo dataset (util/data/demo_data.py): six shape classes on textured backgrounds, in Pascal VOC
layout with VOC's colours, generated at DATA.data_root the first time a run reads it."""
from __future__ import annotations

from util.data.datasets.base import DATASETS, DatasetInfo, voc_palette
from util.data.demo_data import DEMO_CLASSES, ensure_demo_data

DATASETS.register("demo", DatasetInfo(
    name="demo", classes=DEMO_CLASSES, palette=voc_palette(256), lists={"train": "list/train.txt",
                                                                        "val": "list/val.txt"},
    crop_size=80, base_size=0, on_first_use=ensure_demo_data))  # whole 96x96 scenes, not resized
