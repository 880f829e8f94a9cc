"""Transfer from a surrogate (ATTACK.surrogate, docs/evaluation.md#transfer-from-a-surrogate): the attacks run on
another model and their adversarial images are scored on the evaluated one, the "black-box transfer" setting.

ATTACK.surrogate is {config: <the surrogate's config file>, model_path: <its checkpoint>} (model_path empty: the
surrogate run's model/last.pth). The surrogate is built from its own config and loaded strictly like any evaluated
model; each attack runs on it through its own inference settings (its TEST mode, crop, normalisation) on the view of
the evaluated protocol, which must therefore be the same view (the protocol and its view settings, see
Protocol.view_settings). With the surrogate equal to the evaluated model, the figures are the white-box ones.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from engine.result_store import file_digest
from engine.trained_model import load_trained_model
from util.config import Config, load_config
from util.errors import UserError


@dataclass
class Surrogate:
    cfg: Config           # the surrogate's own config
    model: nn.Module      # in eval mode
    config_path: Path
    model_path: Path

    def describe(self) -> dict:
        """What metrics.json records: the files, the checkpoint's digest and the surrogate's network."""
        m = self.cfg.MODEL
        return {"config": str(self.config_path), "model_path": str(self.model_path),
                "checkpoint_sha256": file_digest(self.model_path), "arch": m.arch, "backbone": m.backbone,
                "protocol": self.cfg.ATTACK.protocol, "mode": self.cfg.TEST.mode}


def load_surrogate(cfg, device: torch.device | str = "cpu") -> Surrogate | None:
    """The surrogate ATTACK.surrogate names (None when it is {}), built and loaded strictly on `device`."""
    spec = cfg.ATTACK.surrogate  # its form is checked with the config (util/config.py)
    if not spec:
        return None
    path = Path(spec["config"])
    if not path.is_file():
        raise UserError(f"ATTACK.surrogate.config: config file '{path}' does not exist")
    scfg = load_config(path, ["TEST.model_path", spec.get("model_path", "")])
    if scfg.DATA.classes != cfg.DATA.classes:
        raise UserError(f"ATTACK.surrogate: the surrogate predicts {scfg.DATA.classes} classes (its DATA.classes), "
                        f"the evaluated model {cfg.DATA.classes}: an attack needs the labels of both")
    trained = load_trained_model(scfg, device)
    return Surrogate(scfg, trained.model, path, trained.path)
