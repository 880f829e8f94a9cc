"""PIR-AT (ADV_TRAIN.method pirat, docs/training.md "The PIR-AT recipe, point by point"): SEA's adversarial training
as its tools/train_rob_seg.py runs it. Every image of every per-process batch is replaced by its adversarial version
(ADV_TRAIN.adv_ratio must be 1), made by ADV_TRAIN.attack on the unwrapped model in eval mode; the network then trains
on the adversarial batch with CE(main) + TRAIN.aux_weight x CE(aux). The step is adversarial training's (recipe at)
with the whole batch attacked; what PIR-AT adds is its attack (pirat-pgd), its optimizers and schedules
(engine/optim.py), its configs, and ADV_TRAIN.iterate_grads.

ADV_TRAIN.iterate_grads reproduces what SEA's loop does besides: its attack calls `loss.backward()` on the model at
each iterate and nothing clears the parameter gradients this leaves before the optimizer step (`zero_grad` runs before
the attack). Its update therefore also descends, for each iterate x_0..x_{T-1} the attack took a gradient at (x_0 is
the clean image), the batch-mean cross-entropy of the model in eval mode at that iterate. The attack library never
touches parameter gradients, so here the attack runs on an IterateRecorder that keeps those iterates, and the recipe
adds their gradients before the training forward (T more forward and backward passes per step). Under DDP they are
accumulated on each process and the training backward averages the sum, as DDP averaged each of SEA's backwards.
"""
from __future__ import annotations

import torch
from torch import nn

from attack import Attack
from engine.attacks import attack_spec, build_from_spec
from engine.recipes.at import AdversarialTraining
from engine.recipes.base import RECIPES, segmentation_loss
from util.errors import UserError


class IterateRecorder(nn.Module):
    """The model as the training attack sees it: the same module, which also keeps every input that the attack takes
    a gradient at (an input that requires grad), in order."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.iterates: list[torch.Tensor] = []

    def forward(self, x: torch.Tensor, return_dict: bool = False):
        if x.requires_grad:
            self.iterates.append(x.detach())
        return self.model(x, return_dict=True) if return_dict else self.model(x)


@RECIPES.register("pirat")
class PIRAT(AdversarialTraining):
    name = "pirat"
    supports_iterate_grads = True

    def __init__(self, cfg, model: nn.Module, attack: Attack | None = None) -> None:
        a = cfg.ADV_TRAIN
        if a.adv_ratio != 1:
            raise UserError(f"ADV_TRAIN.method pirat attacks every image of the batch, as PIR-AT does: it needs "
                            f"ADV_TRAIN.adv_ratio 1, got {a.adv_ratio}")
        self.recorder = None
        if a.iterate_grads:
            if cfg.TRAIN.amp == "fp16":
                raise UserError("ADV_TRAIN.iterate_grads adds gradients outside the fp16 grad scaler: use TRAIN.amp "
                                "none or bf16")
            if attack is not None:
                raise UserError("ADV_TRAIN.iterate_grads builds its own training attack from ADV_TRAIN.attack")
            self.recorder = IterateRecorder(model)
            attack = build_from_spec(attack_spec(a.attack, "ADV_TRAIN.attack"), self.recorder, cfg)
        super().__init__(cfg, model, attack)
        self.model = model

    def batch(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        if self.recorder is None:
            return super().batch(images, labels)
        self.recorder.iterates.clear()
        composed = super().batch(images, labels)
        iterates, self.recorder.iterates = self.recorder.iterates, []
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()  # as the attack saw it: BatchNorm's running statistics, no dropout
        try:
            for x in iterates:
                segmentation_loss(self.model(x), labels, self.cfg.DATA.ignore_index).backward()
        finally:
            for m, training in modes:
                m.training = training
        return composed

    def attack_passes(self) -> float:
        """Every image attacked; with iterate_grads one more forward+backward at each iterate the attack took a
        gradient at."""
        backward = self.attack.expected_passes(1)[1]
        return float(backward * (2 if self.recorder is not None else 1))

    def describe(self, per_process: int) -> str:
        extra = ("; the eval-mode cross-entropy at each of the attack's iterates is descended too "
                 "(ADV_TRAIN.iterate_grads)") if self.recorder is not None else ""
        return f"PIR-AT: all {per_process} images per process and step attacked by {self.attack!r}{extra}"
