"""PIR-AT (ADV_TRAIN.method pirat, docs/training.md "The PIR-AT recipe, point by point"): SEA's adversarial training
as its tools/train_rob_seg.py runs it. Every image of every per-process batch is replaced by its adversarial version
(ADV_TRAIN.adv_ratio must be 1), made by ADV_TRAIN.attack on the unwrapped model in eval mode; the network then trains
on the adversarial batch with CE(main) + TRAIN.aux_weight x CE(aux). The step is adversarial training's (recipe at)
with the whole batch attacked; what PIR-AT adds is its attack (pirat-pgd), its optimizers and schedules
(engine/optim.py) and its configs."""
from __future__ import annotations

from torch import nn

from attack import Attack
from engine.recipes.at import AdversarialTraining
from engine.recipes.base import RECIPES
from util.errors import UserError


@RECIPES.register("pirat")
class PIRAT(AdversarialTraining):
    name = "pirat"

    def __init__(self, cfg, model: nn.Module, attack: Attack | None = None) -> None:
        if cfg.ADV_TRAIN.adv_ratio != 1:
            raise UserError(f"ADV_TRAIN.method pirat attacks every image of the batch, as PIR-AT does: it needs "
                            f"ADV_TRAIN.adv_ratio 1, got {cfg.ADV_TRAIN.adv_ratio}")
        super().__init__(cfg, model, attack)

    def describe(self, per_process: int) -> str:
        return f"PIR-AT: all {per_process} images per process and step attacked by {self.attack!r}"
