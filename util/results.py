"""Evaluation outputs: result/<run_name>/metrics.json and report.md (DESIGN.md, Outputs)."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def new_result_dir(parent: Path, name: str) -> Path:
    """parent/name, or parent/name_2, _3, ... if taken: runs never overwrite each other's results."""
    candidate, k = parent / name, 1
    while candidate.exists():
        k += 1
        candidate = parent / f"{name}_{k}"
    candidate.mkdir(parents=True)
    return candidate


def write_json(payload: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (temporary file, then rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)


def report_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: one row per evaluation (name, eps, steps, mIoU, mAcc, aAcc), scores in %."""
    lines = ["| attack | eps | steps | mIoU | mAcc | aAcc |", "|---|---|---|---|---|---|"]
    for r in rows:
        eps = "-" if r.get("eps") is None else f"{r['eps']:.4f}"
        steps = "-" if r.get("steps") is None else str(r["steps"])
        lines.append(f"| {r['name']} | {eps} | {steps} | {100 * r['mIoU']:.2f} | {100 * r['mAcc']:.2f} | "
                     f"{100 * r['aAcc']:.2f} |")
    return "\n".join(lines)


def per_class_table(names: list[str], columns: dict[str, list[float | None]]) -> str:
    """Markdown table of per-class IoU in %, one column per evaluation (e.g. clean and worst case side by side);
    '-' where a class occurs nowhere."""
    lines = ["| class | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for c, name in enumerate(names):
        cells = ["-" if iou[c] is None else f"{100 * iou[c]:.2f}" for iou in columns.values()]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def save_colour_label(label: np.ndarray, palette: np.ndarray, path: Path) -> None:
    """A (H,W) label or prediction as a palette PNG (class ids keep their values)."""
    png = Image.fromarray(label.astype(np.uint8), mode="P")
    png.putpalette(palette.reshape(-1).tolist())
    png.save(path)
