"""The house takes new pieces as registrations, not as branches in shared code: a model family (a two-stage conv
backbone and a 1x1 head), a training recipe and an attack, each defined in this file only, train one adversarial step
through the engine's trainer and are evaluated clean and attacked through its robustness evaluation."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from attack import ATTACKS, register_attack
from attack.base import Attack
from attack.losses import valid_mask
from conftest import write_yaml
from engine.recipes import RECIPES, AdversarialTraining
from engine.robustness import RobustnessEvaluation
from engine.trained_model import load_trained_model
from engine.training import build_trainer
from model import ARCHITECTURES, BACKBONES, HEADS, Architecture, Head, build_model
from util.config import load_config, run_dir
from util.data.dataset import build_dataset
from util.data.loader import make_loader
from util.distributed import single_process


class TwoStage(nn.Module):
    """Two strided conv stages: levels at strides 2 and 4."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.stage1 = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        self.stage2 = nn.Sequential(nn.Conv2d(width, 2 * width, 3, 2, 1), nn.BatchNorm2d(2 * width), nn.ReLU())
        self.channels, self.strides = (width, 2 * width), (2, 4)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        c1 = self.stage1(x)
        return [c1, self.stage2(c1)]


def two_stage(cfg, pretrained: str = "") -> TwoStage:
    assert not pretrained
    return TwoStage(cfg.MODEL.head_channels)


def conv1x1(cfg, channels: int) -> nn.Module:
    return nn.Conv2d(channels, cfg.DATA.classes, 1)


class WholeBatch(AdversarialTraining):
    """Every image of the batch attacked (PIR-AT's composition), counting the images it attacked."""

    name = "whole-batch"
    attacked: list[int] = []

    def batch(self, images, labels):
        self.attacked.append(len(images))
        return self.attack(images, labels), labels, len(images)

    def describe(self, per_process: int) -> str:
        return f"whole-batch adversarial training: all {per_process} images attacked by {self.attack!r}"


class MarginPGD(Attack):
    """PGD on the margin loss: the best wrong logit minus the true one, averaged over valid pixels (per image)."""

    name = "margin-pgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 0.01, steps: int = 10,
                 random_start: bool = False, seed: int | None = None, ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, seed=seed,
                         ignore_index=ignore_index)

    def objective(self, out, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        logits = self.logits_of(out)
        valid = valid_mask(labels, self.ignore_index)
        y = labels.clamp(max=logits.shape[1] - 1)
        true = logits.gather(1, y[:, None])[:, 0]
        wrong = logits.masked_fill(F.one_hot(y, logits.shape[1]).permute(0, 3, 1, 2).bool(), float("-inf")).amax(1)
        margin = (wrong - true) * valid
        return margin.flatten(1).sum(1) / valid.flatten(1).sum(1).clamp(min=1)


@pytest.fixture
def registered():
    """The new family, recipe and attack, registered for one test and removed again."""
    BACKBONES.register("two-stage", two_stage)
    HEADS.register("conv1x1", Head(conv1x1, in_index=-1))
    ARCHITECTURES.register("tinynet", {"torchvision": Architecture(head="conv1x1", feat_index=-1)})
    RECIPES.register("whole-batch", WholeBatch)
    register_attack("margin-pgd", MarginPGD)
    yield
    for registry, name in ((BACKBONES, "two-stage"), (HEADS, "conv1x1"), (ARCHITECTURES, "tinynet"),
                           (RECIPES, "whole-batch")):
        registry.remove(name)
    ATTACKS.pop("margin-pgd")


def pretrained_weights(cfg, path) -> str:
    """The family trained clean for a few seconds on the 16 training scenes (plain torch), saved as a checkpoint for
    TRAIN.weight, so that the adversarial step starts from a model whose predictions an attack can change."""
    torch.manual_seed(0)
    model = build_model(cfg).train()
    data = build_dataset(cfg, "train", train=False)
    x, y = torch.stack([data[i][0] for i in range(len(data))]), torch.stack([data[i][1] for i in range(len(data))])
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    for _ in range(150):
        optimizer.zero_grad()
        F.cross_entropy(model(x), y, ignore_index=255).backward()
        optimizer.step()
    torch.save({"model": model.state_dict()}, path)
    return str(path)


def test_a_family_recipe_and_attack_from_outside_the_project(registered, tmp_path, tiny_data):
    cfg = load_config(write_yaml(tmp_path / "tinynet.yaml", f"""
EXP: {{root: {tmp_path / 'exp'}}}
DATA: {{name: demo, data_root: {tiny_data}, classes: 7, workers: 0}}
MODEL: {{arch: tinynet, backbone: two-stage, head_channels: 8}}
TRAIN: {{epochs: 1, batch_size: 16, crop_size: [40, 40], scale_range: [0.8, 1.2], base_lr: 0.001}}
TEST: {{mode: whole, batch_size: 2, workers: 0}}
ADV_TRAIN: {{method: whole-batch, attack: {{name: margin-pgd, eps: 0.03, alpha: 0.01, steps: 2}}}}
ATTACK:
  attacks:
    - {{name: margin-pgd, eps: 0.1, alpha: 0.02, steps: 5}}
    - {{name: rppgd++, eps: 0.1, alpha: 0.02, steps: 5}}
"""))
    model = build_model(cfg)
    assert type(model.backbone) is TwoStage and model.aux_head is None
    assert {k for k in model.state_dict() if not k.startswith("backbone.")} == {"head.weight", "head.bias"}
    cfg.TRAIN.weight = pretrained_weights(cfg, tmp_path / "clean.pth")

    # one adversarial training step (16 training images, a global batch of 16) through the engine's trainer
    WholeBatch.attacked.clear()
    trainer = build_trainer(cfg, single_process())
    assert type(trainer.recipe) is WholeBatch and trainer.recipe.attack.name == "margin-pgd"
    assert trainer.iterations == 1
    trainer.train()
    assert WholeBatch.attacked == [16], "the recipe attacked the whole batch of the one step"
    log = (run_dir(cfg) / "train.log").read_text()
    assert "epoch 1 iter 1/1" in log and "adv loss" in log and "clean loss" not in log
    assert "whole-batch adversarial training: all 16 images" in log

    # the trained checkpoint, evaluated clean and under the new attack and RP-PGD++ (which reads the family's feat)
    trained = load_trained_model(cfg)
    before = torch.load(cfg.TRAIN.weight, weights_only=True)["model"]
    assert not torch.equal(trained.model.head.weight, before["head.weight"]), "the step trained from TRAIN.weight"
    loader = make_loader(build_dataset(cfg, "val", train=False), 2, 0, 0, 1, train=False)
    evaluation = RobustnessEvaluation(cfg, trained.model)
    result = evaluation.run(loader, tmp_path / "results", "tinynet", model_path=trained.path, epoch=trained.epoch)
    metrics = json.loads((result.result_dir / "metrics.json").read_text())
    assert list(metrics["attacks"]) == ["margin-pgd", "rppgd++"]
    assert metrics["attacks"]["margin-pgd"]["params"]["eps"] == 0.1
    for key in ("margin-pgd", "rppgd++"):
        assert metrics["attacks"][key]["mIoU"] < metrics["clean"]["mIoU"], f"{key} lowers the mIoU"
    worst = metrics["worst_case"]["mIoU"]
    assert worst <= min(a["mIoU"] for a in metrics["attacks"].values()) + 1e-12
    assert "| margin-pgd |" in (result.result_dir / "report.md").read_text()

    # the new attack raises the loss it maximises on the trained model
    x, y, _ = next(iter(make_loader(build_dataset(cfg, "val", train=False), 4, 0, 0, 1, train=False)))
    x, y = torch.stack(x), torch.stack(y)
    trace = MarginPGD(trained.model, eps=0.1, alpha=0.02, steps=5).run(x, y).trace
    assert trace[-1].loss > trace[0].loss
