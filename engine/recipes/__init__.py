"""Training recipes by ADV_TRAIN.method: none (clean), at (adversarial training), release (the RP-PGD release's
composition), pirat (PIR-AT: every image attacked). See base.py for what a recipe is."""
from engine.recipes import at, clean, pirat, release  # noqa: F401  (each registers itself)
from engine.recipes.at import AdversarialTraining, adversarial_count
from engine.recipes.base import RECIPES, Recipe, StepResult, segmentation_loss
from engine.recipes.clean import CleanTraining
from engine.recipes.pirat import PIRAT
from engine.recipes.release import ReleaseComposition

__all__ = ["PIRAT", "RECIPES", "AdversarialTraining", "CleanTraining", "Recipe", "ReleaseComposition", "StepResult",
           "adversarial_count", "segmentation_loss"]
