"""Output folders and files that are written whole: a new result folder per evaluation, JSON written atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def new_result_dir(parent: Path, name: str) -> Path:
    """parent/name, or parent/name_2, _3, ... if taken: runs never overwrite each other's results."""
    candidate, k = parent / name, 1
    while candidate.exists():
        k += 1
        candidate = parent / f"{name}_{k}"
    candidate.mkdir(parents=True)
    return candidate


def write_json(payload: dict[str, Any], path: Path) -> None:
    """Write JSON atomically (a temporary file of this process, then rename): processes that write the same file at
    once (the ranks of one evaluation) each leave a whole file, never a half-written one or a missing temporary."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=2, allow_nan=False) + "\n")
    os.replace(tmp, path)
