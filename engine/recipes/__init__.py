"""Training recipes by ADV_TRAIN.method: none (clean), at (adversarial training), release (the RP-PGD release's
composition). See base.py for what a recipe is."""
from engine.recipes import at, clean, release  # noqa: F401  (each registers itself)
from engine.recipes.at import AdversarialTraining, adversarial_count
from engine.recipes.base import RECIPES, Recipe, StepResult, segmentation_loss
from engine.recipes.clean import CleanTraining
from engine.recipes.release import ReleaseComposition

__all__ = ["RECIPES", "AdversarialTraining", "CleanTraining", "Recipe", "ReleaseComposition", "StepResult",
           "adversarial_count", "segmentation_loss"]
