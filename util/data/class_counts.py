"""Per-class pixel counts of the training list (MCE-Bal's class weights, docs/method.md §5).

They come from the pre-flight data check's pass over DATA.train_list (util.data.check), cached with it under
<EXP.root>/<DATA.name>/data_check/; the dataset folder is never written.
"""
from __future__ import annotations

from util.data.check import check_list


def class_pixel_counts(cfg) -> list[int]:
    """Pixels of each class over every label of DATA.train_list (ignored pixels not counted); the list is checked
    on the way, whatever DATA.check says, since every label is read."""
    return check_list(cfg, cfg.DATA.train_list).counts
