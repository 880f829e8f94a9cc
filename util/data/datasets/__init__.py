"""The named datasets (DATA.name), one module each: demo, voc2012, cityscapes, ade20k, ade20k151 (see base.py)."""
from util.data.datasets import ade20k, ade20k151, cityscapes, demo, voc2012  # noqa: F401  (each registers itself)
from util.data.datasets.base import DATASETS, DatasetInfo, class_names, palette, voc_palette

__all__ = ["DATASETS", "DatasetInfo", "class_names", "palette", "voc_palette"]
