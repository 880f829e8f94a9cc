"""Resumable evaluation: each finished (entry, shard) of an evaluation is kept on disk until the evaluation ends.

tool_test/test.py evaluates the clean model and then each attack; every process's share of one entry is saved
atomically under <run>/result/.partial/<digest>/ as soon as it is done. The digest covers what decides the figures
(the protocol and its settings, the checkpoint's bytes, the dataset and its image count, the classes), the entry's
key covers the attack's configuration and the file name the shard (rank, world). Run again with the same settings,
the evaluation loads what is done and computes the rest, so its metrics.json equals an uninterrupted run's; other
settings never see these files. The folder is removed when metrics.json is written.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import torch

from util.checkpoint import save_checkpoint
from util.evaluation.metrics import SegMetric


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def settings_digest(settings: dict[str, Any]) -> str:
    """A short digest of JSON-serialisable settings."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def metric_state(metric: SegMetric) -> dict[str, Any]:
    return {"cm": metric.cm, "per_image": metric.per_image, "per_image_counts": metric.per_image_counts,
            "runs": {k: metric_state(m) for k, m in metric.runs.items()}, "warnings": metric.warnings,
            "zero_gradient": metric.zero_gradient, "min_norm": metric.min_norm}


def metric_from_state(state: dict[str, Any], num_classes: int, ignore_index: int) -> SegMetric:
    metric = SegMetric(num_classes, ignore_index)
    metric.cm = state["cm"]
    metric.per_image = {int(k): float(v) for k, v in state["per_image"].items()}
    metric.per_image_counts = {int(k): v for k, v in state["per_image_counts"].items()}
    metric.runs = {k: metric_from_state(v, num_classes, ignore_index) for k, v in state["runs"].items()}
    metric.warnings, metric.zero_gradient = list(state["warnings"]), [int(i) for i in state["zero_gradient"]]
    metric.min_norm = {int(k): float(v) for k, v in state["min_norm"].items()}
    return metric


class ShardStore:
    """The finished shards of one evaluation (folder named by the settings' digest)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, entry: str, entry_settings: dict[str, Any], rank: int, world: int) -> Path:
        return self.folder / f"{settings_digest({'entry': entry, **entry_settings})}.{rank}-of-{world}.pt"

    def load(self, path: Path, num_classes: int, ignore_index: int) -> SegMetric | None:
        """The shard's metric when it was finished before (None otherwise)."""
        if not path.is_file():
            return None
        return metric_from_state(torch.load(path, map_location="cpu", weights_only=True), num_classes, ignore_index)

    def save(self, path: Path, metric: SegMetric) -> None:
        save_checkpoint(metric_state(metric), path)  # atomic; a failed write stops the run with its path

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def evaluation_store(cfg, run: Path, model_path: Path, protocol_description: dict, images: int) -> ShardStore:
    """Where an evaluation's finished shards are kept (<run>/result/.partial/<digest>/): named by a digest of
    everything that decides the figures (the checkpoint's bytes, the protocol, the image count, the DATA and TEST
    settings), not the split into processes (the shards' file names carry it), nor workers or pictures."""
    settings = {"checkpoint": file_digest(model_path), "protocol": protocol_description, "images": images,
                "DATA": {k: v for k, v in cfg.DATA.to_dict().items() if k != "workers"},
                "TEST": {k: v for k, v in cfg.TEST.to_dict().items() if k not in ("workers", "run_name",
                                                                                   "save_pictures", "model_path")}}
    return ShardStore(run / "result" / ".partial" / settings_digest(settings))
