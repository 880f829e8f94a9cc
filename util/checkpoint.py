"""Checkpoints: written atomically (temporary file, then rename) and loaded safely and strictly."""
from __future__ import annotations

import io
import json
import os
import pickletools
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from util.errors import EXIT_WRITE_FAILED, RunStopped, UserError


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """torch.save to a temporary file, then rename it to `path`, so that a crash never leaves a half-written file
    under that name. A write that fails (a full disk) removes the temporary file, keeps the last good `path` and
    stops the run (RunStopped, exit code 4) with a message naming it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(state, tmp)
        os.replace(tmp, path)
    except (OSError, RuntimeError) as exc:  # torch.save reports a failed write as a RuntimeError
        tmp.unlink(missing_ok=True)
        kept = f"the last good checkpoint '{path}' is kept" if path.is_file() else f"no checkpoint '{path}' exists yet"
        raise RunStopped(f"cannot write checkpoint '{path}': {exc}; {kept}", EXIT_WRITE_FAILED) from exc


def load_checkpoint(path: str | Path, key: str = "TEST.model_path") -> dict[str, Any]:
    """Read a checkpoint written by tool_train/train.py, or by semseg/DDC-AT/the RP-PGD release ({'epoch',
    'state_dict', 'optimizer'}: its weights become 'model'), or a plain state dict (torch.save(model.state_dict()),
    as SEA's train_rob_seg.py and torchvision and smp models save them: it becomes 'model'), with weights_only: no
    code is unpickled. A folder is a Hugging Face save_pretrained folder: its safetensors are read (no code in them
    can run)."""
    path = Path(path)
    if path.is_dir():
        return {"model": read_pretrained_folder(path, key)}
    if not path.is_file():
        raise UserError(f"{key}: checkpoint '{path}' does not exist")
    state = read_tensors(path, key)
    if isinstance(state, dict) and "model" not in state and isinstance(state.get("state_dict"), dict):
        state = {**state, "model": state["state_dict"]}  # semseg, DDC-AT and the RP-PGD release save 'state_dict'
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        state = {"model": state}  # a plain state dict (SEA's, torchvision's, smp's)
    if not isinstance(state, dict) or "model" not in state:
        raise UserError(f"{key}: '{path}' is not a checkpoint of tool_train/train.py (no 'model' entry) nor of "
                        "semseg, DDC-AT or the RP-PGD release (no 'state_dict' entry) nor a plain state dict (SEA's)")
    return state


def read_pretrained_folder(path: Path, key: str) -> dict[str, torch.Tensor]:
    """The weights of a save_pretrained folder: model.safetensors, or the shards model.safetensors.index.json names."""
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.is_file() else \
        ["model.safetensors"]
    if not all((path / f).is_file() for f in files):
        raise UserError(f"{key}: '{path}' is a folder without {' and '.join(files)}: a weights folder is one that "
                        "save_pretrained wrote (safetensors)")
    try:
        from safetensors.torch import load_file
    except ModuleNotFoundError:
        raise UserError(f"{key}: reading '{path}' needs the package 'safetensors': python -m pip install -r "
                        "requirements.txt") from None
    weights: dict[str, torch.Tensor] = {}
    for name in files:
        try:
            weights.update(load_file(path / name))
        except Exception as exc:  # safetensors raises SafetensorError (an OSError or not, by version) on a bad file
            raise UserError(f"{key}: '{path / name}' is not a safetensors file, or a damaged one: {exc}") from None
    return weights


def read_tensors(path: Path, key: str) -> Any:
    """torch.load(path, weights_only=True): tensors and plain containers only, so no code in the file ever runs. A
    file torch cannot read is a UserError that says which of the two it is: one holding other Python objects (named,
    found by reading the pickle's opcodes without running them), or one that is no checkpoint or a damaged one."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError, KeyError... by file
        objects = pickled_objects(path)
        if objects:
            raise UserError(f"{key}: '{path}' holds Python objects other than tensors ({', '.join(objects[:5])}), "
                            "which this project never unpickles (it loads with weights_only=True); re-save it as a "
                            "state_dict") from None
        raise UserError(f"{key}: '{path}' is not a checkpoint, or a damaged one (truncated? "
                        f"{path.stat().st_size} bytes)") from exc


def pickled_objects(path: Path) -> list[str]:
    """The non-torch globals (module.name) that unpickling `path` would import; read with pickletools, so nothing
    is imported or run. A zip checkpoint's data.pkl is read, or a legacy file's pickles one after another; [] when
    there is no readable pickle."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith("data.pkl")]
            data = archive.read(names[0]) if names else b""
    else:
        data = path.read_bytes()
    stream, found, strings = io.BytesIO(data), [], []
    try:
        while stream.tell() < len(data):
            for op, arg, _ in pickletools.genops(stream):
                if op.name in ("GLOBAL", "INST"):
                    found.append(str(arg).replace(" ", "."))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(".".join(strings[-2:]))
                if isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 -- the rest of a damaged file holds no pickle to read
        pass
    safe = ("torch.", "collections.OrderedDict", "builtins.set", "_codecs.encode")
    return sorted({name for name in found if not name.startswith(safe)})


def load_model_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """load_state_dict with strict checking; a mismatch is a UserError that lists the keys."""
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    shapes = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or shapes:
        raise UserError(
            f"{source} does not match the model built from the config (MODEL.*, DATA.classes):\n"
            f"  missing: {missing[:10]}{' ...' if len(missing) > 10 else ''}\n"
            f"  unexpected: {unexpected[:10]}{' ...' if len(unexpected) > 10 else ''}\n"
            f"  shape mismatch: {shapes[:10]}{' ...' if len(shapes) > 10 else ''}"
        )
    model.load_state_dict(state, strict=True)
