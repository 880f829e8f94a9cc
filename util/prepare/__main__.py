"""Command line of util.prepare: python -m util.prepare <dataset> --src RAW [--dst DATA] [--sbd SBD] [--workers N]."""
from __future__ import annotations

import argparse
import os
import sys

from util.errors import run_cli
from util.prepare import PLANNERS, prepare


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m util.prepare",
        description="Turn a raw dataset download into list files with 8-bit train-id labels (README, Datasets).")
    parser.add_argument("dataset", choices=sorted(PLANNERS))
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
