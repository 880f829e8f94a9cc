"""The optional libraries of the model families, imported only when a family builds a model, so that the rest of
the project never pays their import time. Their pinned versions are in requirements.txt."""
from __future__ import annotations

import importlib
from types import ModuleType

from util.errors import UserError

# import name -> the pip requirement that installs it (as pinned in requirements.txt)
PACKAGES = {"transformers": "transformers==5.25.0", "segmentation_models_pytorch": "segmentation-models-pytorch==0.6.0",
            "timm": "timm==1.0.31"}


def require(name: str, arch: str) -> ModuleType:
    """Import the package `name` for MODEL.arch `arch`; a UserError naming it and its install command if missing."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name is None or exc.name.split(".")[0] != name.split(".")[0]:
            raise  # the package is there but one of its own imports is not: show that error as it is
        raise UserError(f"MODEL.arch {arch} needs the package '{name}', which is not installed: "
                        f"python -m pip install {PACKAGES[name]}  (or: python -m pip install -r requirements.txt)"
                        ) from None
