"""Shared fixtures: tiny configs and a tiny generated dataset, so every test runs on a CPU in seconds."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from util.config import load_config  # noqa: E402
from util.data.demo_data import generate  # noqa: E402


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(2)


@pytest.fixture(autouse=True, scope="session")
def _no_torch_compile():
    """adv_lib compiles ALMA prox's proximal operator with torch.compile, which takes some 20 s per input shape on a
    CPU; the fast tests run the same operations eagerly."""
    with torch._dynamo.config.patch(disable=True):
        yield


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small demo dataset: 16 training and 4 validation scenes of 48x48 pixels."""
    return generate(tmp_path_factory.mktemp("data") / "demo", train=16, val=4, size=48, seed=3)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture
def tiny_cfg(tmp_path, tiny_data):
    """A config for a PSPNet-ResNet18 on tiny_data that trains one epoch in a few seconds."""
    def make(*overrides: str, arch: str = "pspnet"):
        path = write_yaml(tmp_path / "tiny.yaml", f"""
EXP: {{root: {tmp_path / 'exp'}}}
DATA: {{name: demo, data_root: {tiny_data}, classes: 7, workers: 0}}
MODEL: {{arch: {arch}, layers: 18, head_channels: 32}}
TRAIN: {{epochs: 1, batch_size: 4, crop_size: [40, 40], scale_range: [0.8, 1.2], print_freq: 1, save_freq: 1}}
TEST: {{mode: whole, batch_size: 2, workers: 0}}
""")
        return load_config(path, list(overrides))
    return make


@pytest.fixture(scope="session")
def trained_tiny(tiny_data):
    """A TinySeg trained for a few seconds on tiny_data (eval mode) and the validation images and labels."""
    from tiny_models import train_tiny
    model, val = train_tiny(tiny_data)
    return model, torch.stack([v[0] for v in val]), torch.stack([v[1] for v in val])
