"""One-command preparation of the raw dataset downloads into the list-file form (DESIGN.md, Data).

    python -m util.prepare voc2012 --src VOCdevkit/VOC2012 --sbd benchmark_RELEASE/dataset [--dst data/voc2012]
    python -m util.prepare cityscapes --src CITYSCAPES_ROOT [--dst data/cityscapes]
    python -m util.prepare ade20k --src ADEChallengeData2016 [--dst data/ade20k]

Each dataset module (voc2012.py, cityscapes.py, ade20k.py) checks its raw tree and plans the work;
common.py converts labels, links images and writes the lists. A second run skips finished files.
"""
from __future__ import annotations

from pathlib import Path

from util.prepare import ade20k, cityscapes, voc2012
from util.prepare.common import Report, check_destination, execute

PLANNERS = {"voc2012": voc2012.plan, "cityscapes": cityscapes.plan, "ade20k": ade20k.plan}


def prepare(dataset: str, src: str | Path, dst: str | Path, sbd: str | Path | None = None, workers: int = 1,
            copy: bool = False) -> Report:
    """Prepare `dataset` from the raw tree `src` into `dst`; returns what was done (and the warnings)."""
    src, dst = Path(src), Path(dst)
    check_destination(src, dst)
    if sbd is not None:
        check_destination(Path(sbd), dst)
    plan = PLANNERS[dataset](src, None if sbd is None else Path(sbd))
    return execute(plan, dst, workers, copy, desc=f"preparing {dataset} in {dst}")
