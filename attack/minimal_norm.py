"""Minimal-norm attacks of `adv_lib` (Rony et al.), docs/method.md: DAG, PDPGD, ALMA prox, ASMA and PDGD, called as
the library defines them (not rewritten), for a fixed budget clamped to the eps ball as the rse package does.

Each attack searches, per image, the smallest perturbation that fools at least `adv_threshold` (adv_lib's 0.99) of
the valid pixels, and returns the smallest one it found (or, where none fooled enough pixels, the one that fooled
the most). The fixed-budget result is that image clamped to [x - eps, x + eps] (torch.clamp, as rse does; it stays in
[0,1] because adv_lib's image does). Besides it the attack records its own figure: per image the L-inf norm of
adv_lib's image where that image fools at least `adv_threshold` of the valid pixels, +inf where it does not
(AttackResult.extras["min_norm"], (N,) float64, NaN for an image without a valid pixel, and the fooled fraction in
extras["fooled"]); the median of these norms and the fraction of images with a norm <= eps are the minimal-norm
figures (engine/report.py).

Ignored pixels (ignore_index) are adv_lib's `masks`: they count neither in its losses nor in its success rate; an
image without a valid pixel is returned unchanged. ALMA prox runs image by image: in a batch whose images have
different numbers of valid pixels, adv_lib 0.2.8's constraint masking asks for the k-th largest constraint with a
k of 0 for some image and fails with an index error.

adv_lib imports visdom (for a live-plot callback this project never passes) when its attacks are imported, and
visdom installs on neither Python 3.11 with current setuptools (0.2.4 is a source package whose setup needs
pkg_resources) nor from a wheel (0.3.0 needs Python 3.12). So requirements install adv_lib without its
dependencies, and where visdom is not installed, `adv_lib_segmentation()` imports adv_lib with an empty module
standing for visdom during that import only (sys.modules is restored afterwards); any use of it raises.

The trace holds the clean image (step 0) and the returned image (step `steps`); its loss is the fraction of valid
pixels fooled. adv_lib takes its gradients itself, so these attacks make no zero-gradient finding; a non-finite
result raises NonFiniteError.
"""
from __future__ import annotations

import importlib.util
import sys
import types
from typing import Callable

import torch
from torch import nn

from attack.ball import RandomSource
from attack.base import Attack, AttackResult, Recorder, check_range
from attack.losses import predictions, valid_mask

ADV_THRESHOLD = 0.99  # adv_lib's default: an image counts as fooled when this fraction of its valid pixels is


def _visdom_absent(*args, **kwargs):
    raise RuntimeError("visdom is not installed: adv_lib was imported with a placeholder for it "
                       "(attack/minimal_norm.py); install visdom to use adv_lib's VisdomLogger")


def adv_lib_segmentation() -> types.ModuleType:
    """adv_lib.attacks.segmentation, imported with a placeholder `visdom` module when visdom is not installed."""
    if "adv_lib.attacks.segmentation" not in sys.modules and importlib.util.find_spec("visdom") is None:
        placeholder = types.ModuleType("visdom", "placeholder: visdom is not installed (see attack/minimal_norm.py)")
        placeholder.Visdom = _visdom_absent
        sys.modules["visdom"] = placeholder
        try:
            import adv_lib.attacks.segmentation
        finally:
            del sys.modules["visdom"]
    import adv_lib.attacks.segmentation
    return adv_lib.attacks.segmentation


class MinimalNorm(Attack):
    """An adv_lib minimal-norm attack clamped to the eps ball. A subclass names the adv_lib function (`function`)
    and passes its own hyper-parameters (`options()`)."""

    function = ""              # the name in adv_lib.attacks.segmentation
    per_image = False          # True: adv_lib is called one image at a time
    min_steps = 1              # 2 where adv_lib's schedule divides by steps - 1
    targeted = False           # True: success is a pixel predicted as the target map (targets()), not a wrong one

    def __init__(self, model: nn.Module, eps: float, steps: int, ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, alpha=None, steps=steps, random_start=False, ignore_index=ignore_index)
        if steps < self.min_steps:
            raise ValueError(f"{self.name} needs steps >= {self.min_steps} (adv_lib's schedule divides by steps - 1); "
                             f"got {steps}")
        self.adv_lib = getattr(adv_lib_segmentation(), self.function)

    def options(self) -> dict:
        """The keyword arguments of the adv_lib function besides model, inputs, labels and masks."""
        raise NotImplementedError

    def expected_passes(self, images: int) -> tuple[int, int]:
        """At most `steps` forward and backward passes of adv_lib (DAG stops when every image is fooled), per image
        where the attack runs image by image, and one forward pass that judges adv_lib's images."""
        calls = images if self.per_image else 1
        return calls * self.steps + 1, calls * self.steps

    def minimise(self, x: torch.Tensor, goal: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        """adv_lib's smallest adversarial images for images with at least one valid pixel; `goal` is the label map
        (untargeted) or the target map."""
        options = {**self.options(), **({"targeted": True} if self.targeted else {})}
        if not self.per_image:
            return self.adv_lib(self.model, x, goal, masks=masks, **options)
        return torch.cat([self.adv_lib(self.model, x[i:i + 1], goal[i:i + 1], masks=masks[i:i + 1], **options)
                          for i in range(len(x))])

    @torch.no_grad()
    def fooled(self, x: torch.Tensor, goal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The fraction of valid pixels fooled at x per image (N,) (0 without valid pixels): misclassified, or for
        a targeted attack predicted as the target map `goal`; and the logits."""
        logits = self.logits_of(self.forward(x))
        valid = valid_mask(goal, self.ignore_index)
        hit = predictions(logits) == goal if self.targeted else predictions(logits) != goal
        return (hit & valid).flatten(1).sum(1).double() / valid.flatten(1).sum(1).clamp(min=1), logits

    def _attack(self, x_nat: torch.Tensor, labels: torch.Tensor, records: Recorder,
                random: Callable[[], RandomSource]) -> AttackResult:
        masks, goal = valid_mask(labels, self.ignore_index), self.targets(labels)
        if records.active:
            fooled, logits = self.fooled(x_nat, goal)
            self.record(records, 0, fooled, logits, goal, {})
        found = x_nat.clone()
        todo = masks.flatten(1).any(1)
        if todo.any():
            found[todo] = self.minimise(x_nat[todo], goal[todo], masks[todo]).to(x_nat.dtype)
        finite = torch.isfinite(found).flatten(1).all(1)
        records.checks["non_finite"] |= ~finite
        records.checks["gradient_seen"] |= True  # adv_lib takes its gradients itself: no zero-gradient finding
        fooled_found, _ = self.fooled(found, goal)
        norm = (found - x_nat).flatten(1).abs().amax(1).double()
        success = todo & (fooled_found >= ADV_THRESHOLD)
        min_norm = torch.where(success, norm, torch.full_like(norm, float("inf")))
        min_norm = torch.where(todo, min_norm, torch.full_like(norm, float("nan")))  # no valid pixel: no figure
        adv = torch.clamp(found, min=x_nat - self.eps, max=x_nat + self.eps)  # rse's clamp
        if records.active:
            fooled, logits = self.fooled(adv, goal)
            self.record(records, self.steps, fooled, logits, goal, {})
        return AttackResult(adv=adv, extras={"min_norm": min_norm, "fooled": fooled_found})


class DAG(MinimalNorm):
    """DAG (Xie et al., ICCV 2017) in adv_lib's L-inf form: steps of L-inf size gamma on the summed positive logit
    differences of the not yet fooled pixels; rse runs gamma 0.001 and 0.003 for 200 steps."""
    name = "dag"
    function = "dag"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 200, gamma: float = 0.001,
                 ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, steps=steps, ignore_index=ignore_index)
        check_range("gamma", gamma, 0.0, 1.0, low_open=True)
        self.gamma = float(gamma)

    def options(self) -> dict:
        return {"max_iter": self.steps, "γ": self.gamma, "p": float("inf"), "adv_threshold": ADV_THRESHOLD}


class PrimalDual(MinimalNorm):
    """adv_lib's primal-dual attacks: a primal learning rate, and a schedule that divides by steps - 1."""
    min_steps = 2

    def __init__(self, model: nn.Module, eps: float, steps: int, primal_lr: float, ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, steps=steps, ignore_index=ignore_index)
        check_range("primal_lr", primal_lr, 0.0, float("inf"), low_open=True)
        self.primal_lr = float(primal_lr)


class PDPGD(PrimalDual):
    """PDPGD (Matyasko and Chau, 2021) in adv_lib's segmentation form for the L-inf norm; rse's primal learning rate
    0.01 and adv_lib's 500 steps."""
    name = "pdpgd"
    function = "pdpgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 500, primal_lr: float = 0.01,
                 ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, steps=steps, primal_lr=primal_lr, ignore_index=ignore_index)

    def options(self) -> dict:
        return {"norm": float("inf"), "num_steps": self.steps, "primal_lr": self.primal_lr,
                "adv_threshold": ADV_THRESHOLD}


class PDGD(PrimalDual):
    """PDGD (Matyasko and Chau, 2021), adv_lib's L2 primal-dual attack (its minimal L2 image, scored here by its
    L-inf norm and clamped like the others); adv_lib's defaults."""
    name = "pdgd"
    function = "pdgd"

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 500, primal_lr: float = 0.1,
                 ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, steps=steps, primal_lr=primal_lr, ignore_index=ignore_index)

    def options(self) -> dict:
        return {"num_steps": self.steps, "primal_lr": self.primal_lr, "adv_threshold": ADV_THRESHOLD}


class ALMAProx(MinimalNorm):
    """ALMA prox (Rony et al., 2022): an augmented Lagrangian with a proximal L-inf step; rse's initial learning rate
    1e-4 and adv_lib's 500 steps. Runs image by image (see the module docstring)."""
    name = "alma-prox"
    function = "alma_prox"
    min_steps = 2
    per_image = True

    def __init__(self, model: nn.Module, eps: float = 8 / 255, steps: int = 500, lr_init: float = 1e-4,
                 ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, steps=steps, ignore_index=ignore_index)
        check_range("lr_init", lr_init, 0.0, float("inf"), low_open=True)
        self.lr_init = float(lr_init)

    def options(self) -> dict:
        return {"num_steps": self.steps, "lr_init": self.lr_init, "adv_threshold": ADV_THRESHOLD}


class ASMA(MinimalNorm):
    """ASMA (Ozbulak et al., 2019), the adaptive segmentation mask attack, a targeted attack by definition: adv_lib's
    L2 steps raise the target class's logit at the pixels not yet predicted as it (for an untargeted call adv_lib's
    same loss raises the true logit of the pixels already fooled, so it never fools anything; only the targeted form
    is offered). `target_class` is required: every valid pixel's target. Its figure: the smallest L-inf norm at which
    99% of the valid pixels are predicted as the target. adv_lib's defaults. Runs image by image: its step size
    follows the IoU of the whole batch it is given."""
    name = "asma"
    function = "asma"
    per_image = True
    targeted = True

    def __init__(self, model: nn.Module, target_class: int, eps: float = 8 / 255, steps: int = 1000,
                 tau: float = 1e-7, beta: float = 1e-6, ignore_index: int = 255) -> None:
        super().__init__(model, eps=eps, steps=steps, ignore_index=ignore_index)
        if isinstance(target_class, bool) or not isinstance(target_class, int) or target_class < 0:
            raise ValueError(f"asma is a targeted attack: target_class must be a class id >= 0; got {target_class!r}")
        check_range("tau", tau, 0.0, float("inf"))
        check_range("beta", beta, 0.0, float("inf"))
        self.target_class, self.tau, self.beta = target_class, float(tau), float(beta)

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """`target_class` at every valid pixel."""
        return torch.where(valid_mask(labels, self.ignore_index), torch.full_like(labels, self.target_class), labels)

    @property
    def maximise(self) -> bool:
        return False

    def options(self) -> dict:
        return {"num_steps": self.steps, "τ": self.tau, "β": self.beta, "adv_threshold": ADV_THRESHOLD}
