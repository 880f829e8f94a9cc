"""Resumable evaluation: each finished (entry, shard) of an evaluation is kept on disk until the evaluation ends.

tool_test/test.py evaluates the clean model and then each attack; every process's share of one entry is saved
atomically under <run>/result/.partial/<digest>/ as soon as it is done. The digest covers what decides the figures
(the protocol and its settings, the checkpoint's bytes, the dataset and its image count, the classes, the project's
own sources and the torch version), the entry's key covers the attack's configuration and the file name the shard
(rank, world). Run again with the same settings, the evaluation loads what is done and computes the rest, so its
metrics.json equals an uninterrupted run's; other settings never see these files. A rerun of the same evaluation
under other code (a requeued cluster job on a newer checkout) never mixes shards: it removes the old ones, starts
afresh and says which sources changed. The folder is removed when metrics.json is written.
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
from util.outputs import write_json


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


PROJECT = Path(__file__).resolve().parents[1]
SOURCES = ("attack", "engine", "model", "util")  # the packages whose code computes an evaluation's figures


def code_digests(root: Path = PROJECT) -> dict[str, str]:
    """sha256 of each .py file of the project's packages, by its path relative to `root`."""
    return {str(p.relative_to(root)): file_digest(p) for package in SOURCES
            for p in sorted((root / package).rglob("*.py"))}


class ShardStore:
    """The finished shards of one evaluation (folder named by the settings' digest); `note` says whether an
    interrupted run is continued or one under other code was set aside (None: a fresh evaluation)."""

    def __init__(self, folder: Path, code: dict[str, Any] | None = None, note: str | None = None) -> None:
        self.folder, self.code, self.note = folder, code, note

    def path(self, entry: str, entry_settings: dict[str, Any], rank: int, world: int) -> Path:
        return self.folder / f"{settings_digest({'entry': entry, **entry_settings})}.{rank}-of-{world}.pt"

    def load(self, path: Path, num_classes: int, ignore_index: int) -> SegMetric | None:
        """The shard's metric when it was finished before (None otherwise)."""
        if not path.is_file():
            return None
        return metric_from_state(torch.load(path, map_location="cpu", weights_only=True), num_classes, ignore_index)

    def save(self, path: Path, metric: SegMetric) -> None:
        save_checkpoint(metric_state(metric), path)  # atomic; a failed write stops the run with its path
        if self.code is not None and not (self.folder / CODE_FILE).is_file():
            write_json(self.code, self.folder / CODE_FILE)

    def clear(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


CODE_FILE = "code.json"  # in each .partial/<digest>/: the inputs' digest, the sources' digests, torch's version


def evaluation_store(cfg, run: Path, model_path: Path, protocol_description: dict, images: int,
                     sources: dict[str, str] | None = None, surrogate: dict | None = None) -> ShardStore:
    """Where an evaluation's finished shards are kept (<run>/result/.partial/<digest>/): named by a digest of
    everything that decides the figures (the checkpoint's bytes, the protocol, the image count, the DATA and TEST
    settings, the surrogate of a transfer evaluation (Surrogate.describe()), the project's sources (default:
    code_digests()) and torch's version), not the split into processes
    (the shards' file names carry it), nor workers or pictures. Shards of the same inputs under other code are
    removed, and the store's note names the sources that changed."""
    inputs = {"checkpoint": file_digest(model_path), "protocol": protocol_description, "images": images,
              "surrogate": surrogate,
              "DATA": {k: v for k, v in cfg.DATA.to_dict().items() if k not in ("workers", "check")},
              "TEST": {k: v for k, v in cfg.TEST.to_dict().items() if k not in ("workers", "run_name",
                                                                                 "save_pictures", "model_path")}}
    code = {"inputs": settings_digest(inputs), "sources": code_digests() if sources is None else sources,
            "torch": torch.__version__}
    partial = run / "result" / ".partial"
    store = ShardStore(partial / settings_digest({**inputs, "sources": code["sources"], "torch": code["torch"]}), code)
    if store.folder.is_dir():
        store.note = f"continuing the interrupted evaluation kept in {store.folder}"
    for other in sorted(partial.glob(f"*/{CODE_FILE}")) if partial.is_dir() else []:
        try:
            kept = json.loads(other.read_text())
        except FileNotFoundError:  # another process of this evaluation removed it a moment ago
            continue
        if other.parent != store.folder and kept.get("inputs") == code["inputs"]:
            shutil.rmtree(other.parent, ignore_errors=True)  # every process may try; one succeeds
            store.note = (f"the interrupted evaluation kept in {other.parent} was computed by other code "
                          f"({code_changes(kept, code)}): removed, this evaluation starts afresh")
    return store


def code_changes(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two stores' code: the sources changed, added or removed, and torch's version."""
    a, b = old.get("sources", {}), new["sources"]
    changed = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    parts = [f"{len(changed)} source(s) changed: {', '.join(changed[:5])}{' ...' if len(changed) > 5 else ''}"
             ] if changed else []
    if old.get("torch") != new["torch"]:
        parts.append(f"torch {old.get('torch')} then, {new['torch']} now")
    return "; ".join(parts)
