"""Clean training (ADV_TRAIN.method none): the batch as the loader gives it."""
from __future__ import annotations

from engine.recipes.base import RECIPES, Recipe


@RECIPES.register("none")
class CleanTraining(Recipe):
    name = "none"

    def describe(self, per_process: int) -> str:
        return "clean training"
