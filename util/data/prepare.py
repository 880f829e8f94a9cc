"""One-command preparation of a raw dataset download into the list-file form (docs/datasets.md):

    python -m util.data.prepare voc2012 --src VOCdevkit/VOC2012 --sbd benchmark_RELEASE/dataset [--dst data/voc2012]
    python -m util.data.prepare cityscapes --src CITYSCAPES_ROOT [--dst data/cityscapes]
    python -m util.data.prepare ade20k --src ADEChallengeData2016 [--dst data/ade20k]

Each dataset's module (util/data/datasets/<name>.py) checks its raw tree and plans the work; util/data/preparation.py
converts the labels, links the images and writes the lists. A second run skips finished files.
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from util.data.datasets import DATASETS
from util.data.preparation import Report, check_destination, execute
from util.errors import run_cli

PREPARED = [name for name, info in DATASETS.items() if info.plan is not None]  # the datasets with a raw download


def prepare(dataset: str, src: str | Path, dst: str | Path, sbd: str | Path | None = None, workers: int = 1,
            copy: bool = False) -> Report:
    """Prepare `dataset` from the raw tree `src` into `dst`; returns what was done (and the warnings)."""
    src, dst = Path(src), Path(dst)
    check_destination(src, dst)
    if sbd is not None:
        check_destination(Path(sbd), dst)
    plan = DATASETS.get(dataset).plan(src, None if sbd is None else Path(sbd))
    return execute(plan, dst, workers, copy, desc=f"preparing {dataset} in {dst}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m util.data.prepare",
        description="Turn a raw dataset download into list files with 8-bit train-id labels (docs/datasets.md).")
    parser.add_argument("dataset", choices=sorted(PREPARED))
    parser.add_argument("--src", required=True, help="raw root: VOCdevkit/VOC2012, the Cityscapes root (with "
                        "leftImg8bit/ and gtFine/) or ADEChallengeData2016")
    parser.add_argument("--dst", help="prepared root, the configs' DATA.data_root (default: data/<dataset>)")
    parser.add_argument("--sbd", help="voc2012 only: SBD's benchmark_RELEASE/dataset, for list/train_aug.txt")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                        help="processes converting labels (default: min(8, CPUs))")
    parser.add_argument("--copy", action="store_true", help="copy the images instead of linking them")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error(f"--workers must be at least 1, got {args.workers}")
    dst = args.dst or f"data/{args.dataset}"
    report = prepare(args.dataset, args.src, dst, args.sbd, args.workers, args.copy)
    for note in report.notes:
        print(f"note: {note}", file=sys.stderr)
    lists = ", ".join(f"{name} ({count:,})" for name, count in report.lists.items())
    print(f"{dst}: {report.labels_written:,} labels written, {report.labels_kept:,} already up to date; "
          f"{report.images_linked:,} images {'copied' if report.copied else 'linked'}, {report.images_kept:,} already "
          f"there; lists: {lists}")


if __name__ == "__main__":
    run_cli(main)
