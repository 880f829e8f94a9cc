"""RP-PGD and RP-PGD++ (Zhang et al., AAAI 2025), docs/method.md §4.

Each step maximises L = w_region * L_R + w_inter * L_inter (+ w_intra * L_intra for RP-PGD++): the region loss
of attack/regions.py on the current iterate plus the prototype terms of attack/prototypes.py computed on the
backbone features (`model(x, return_dict=True)["feat"]`).

`variant="described"` (default) follows the paper's definition. `variant="release"` reproduces the authors'
released training code. A variant is resolved once into the named switches of `Switches` (VARIANTS below);
the region and prototype functions take those switches, never the variant's name.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Sequence

import torch
from torch import nn

from attack.ball import RandomSource
from attack.base import Attack, check_choice, check_range
from attack.losses import ce_map, predictions, valid_mask
from attack.prototypes import Prototypes, class_prototypes, inter_loss, intra_loss, to_grid
from attack.regions import TRUE, RegionHistory, initial_regions, region_loss, region_weights, update_regions

POOLS = ("image", "batch")


@dataclass(frozen=True)
class Switches:
    """Every point where the described method and the released code differ (docs/attacks.md, RP-PGD: described and
    release)."""
    normalised_start: bool     # random start U(-eps,eps) added to the normalised image (needs mean/std)
    zero_based_schedule: bool  # region weights from the 0-based step index t-1
    ignored_in_false: bool     # ignored pixels count as never correct, so they land in FALSE
    intra: str                 # L_intra reduction over classes: "mean" (skip intra_exclude) | "last" (class 0 skipped)
    inter_ordered_pairs: bool  # L_inter sums ordered pairs over K(K-1)/2 (twice the mean)
    pool: str                  # prototypes per "image" or per "batch"
    detach_features: bool      # prototype terms computed on detached features (no gradient: logging only)


VARIANTS: dict[str, Switches] = {
    "described": Switches(normalised_start=False, zero_based_schedule=False, ignored_in_false=False, intra="mean",
                          inter_ordered_pairs=False, pool="image", detach_features=False),
    "release": Switches(normalised_start=True, zero_based_schedule=True, ignored_in_false=True, intra="last",
                        inter_ordered_pairs=True, pool="batch", detach_features=True),
}


def default_alpha(alpha: float | None, eps: float, steps: int, variant: str) -> float:
    """The step size when none is given: the release hard-wires eps / steps (docs/method.md §4, point 7); the described
    variant's default is 0.01 (= eps / steps at the training defaults eps 0.03, 3 steps)."""
    if alpha is not None:
        return alpha
    return eps / steps if variant == "release" and isinstance(steps, int) and steps > 0 else 0.01


class RPPGD(Attack):
    """RP-PGD: region loss + inter-class prototype similarity. Training defaults eps 0.03, 3 steps, alpha 0.01
    (without alpha, the release variant takes eps / steps, as its code does).

    pool: None takes the variant's (described "image", release "batch"). mean, std: the model's normalisation
    (e.g. the config's DATA.mean/std), needed only by the release variant's random start.
    """

    name = "rppgd"
    needs_features = True
    intra_weight = 0.0  # RP-PGD has no intra-class term (RP-PGD++ sets w_intra)

    def __init__(self, model: nn.Module, eps: float = 0.03, alpha: float | None = None, steps: int = 3,
                 random_start: bool = True, variant: str = "described", w_region: float = 0.5, w_inter: float = 0.25,
                 pool: str | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 seed: int | None = None, ignore_index: int = 255, best: bool = False) -> None:
        check_choice("variant", variant, tuple(VARIANTS))
        super().__init__(model, eps=eps, alpha=default_alpha(alpha, eps, steps, variant), steps=steps,
                         random_start=random_start, seed=seed, ignore_index=ignore_index, best=best)
        switches = VARIANTS[variant]
        if pool is not None:
            check_choice("pool", pool, POOLS)
            switches = dataclasses.replace(switches, pool=pool)
        check_range("w_region", w_region, 0.0, float("inf"))
        check_range("w_inter", w_inter, float("-inf"), float("inf"))  # negative: study the term's sign
        self.variant, self.switches, self.pool = variant, switches, switches.pool
        self.w_region, self.w_inter = float(w_region), float(w_inter)
        self.mean, self.std = check_normalisation(mean, std, needed=switches.normalised_start and self.random_start)

    @property
    def start_is_feasible(self) -> bool:
        return not (self.switches.normalised_start and self.random_start)

    def start(self, x_nat: torch.Tensor, random: RandomSource) -> torch.Tensor:
        """The PGD start, or with normalised_start (release): z = clamp((x - mean)/std + U(-eps,eps), 0, 1) in
        normalised space, mapped back to pixels: per channel c within [mean_c, mean_c + std_c], generally
        outside the eps ball (the first step's projection pulls it back)."""
        if not (self.switches.normalised_start and self.random_start):
            return super().start(x_nat, random)
        mean = torch.tensor(self.mean, dtype=x_nat.dtype, device=x_nat.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x_nat.dtype, device=x_nat.device).view(1, 3, 1, 1)
        noise = random.rand(x_nat.shape, x_nat)
        z = ((x_nat - mean) / std + (2 * noise - 1) * self.eps).clamp(0.0, 1.0)
        return (z * std + mean).clamp(0.0, 1.0)

    def init_state(self, x_nat: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"regions": None, "terms": None}

    def region_history(self) -> RegionHistory:
        """The region maps of the first image of a call after every step, by this variant's rules."""
        return RegionHistory(0, self.ignore_index, self.switches.ignored_in_false)

    def step_extras(self, state: dict) -> dict[str, Any]:
        """The region, inter and intra terms at the iterate just judged."""
        return dict(state["terms"])

    def result_extras(self, state: dict) -> dict[str, Any]:
        """"regions": the region map (N,H,W) uint8 of the last step (judged on x_{T-1}, attack/regions.py)."""
        return {"regions": state["regions"]}

    def objective(self, out: dict, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        sw = self.switches
        logits, feat = out["out"], out["feat"]
        valid = valid_mask(labels, self.ignore_index)
        if sw.ignored_in_false:  # ignored pixels are never correct, so they land in FALSE
            valid = torch.ones_like(valid)
        correct = (predictions(logits) == labels) & valid
        if state["regions"] is None:
            state["regions"] = initial_regions(correct, valid)
        else:
            state["regions"] = update_regions(state["regions"], correct)
        regions = state["regions"]
        per_image = sw.pool == "image"

        l_region = region_loss(ce_map(logits, labels, self.ignore_index), regions,
                               region_weights(step, self.steps, sw.zero_based_schedule), per_image)
        if sw.detach_features:
            feat = feat.detach()
        grid = tuple(feat.shape[-2:])
        in_true = to_grid(regions, grid) == TRUE
        protos = class_prototypes(feat, to_grid(labels, grid), in_true, logits.shape[1], sw.pool)
        l_inter = inter_loss(protos, sw.inter_ordered_pairs)
        l_intra = self.intra(protos)
        if not per_image:
            l_inter, l_intra = l_inter.squeeze(0), l_intra.squeeze(0)
        # kept as tensors: converting to floats here would synchronise a GPU at every step
        state["terms"] = {"region": l_region.detach(), "inter": l_inter.detach(), "intra": l_intra.detach()}
        return self.w_region * l_region + self.w_inter * l_inter + self.intra_weight * l_intra

    def intra(self, protos: Prototypes) -> torch.Tensor:
        return protos.protos.new_zeros(protos.present.shape[0])


class RPPGDPlusPlus(RPPGD):
    """RP-PGD++: RP-PGD plus the intra-class term (similarities split at `tau`, classes in `intra_exclude`
    skipped; the release variant always skips class 0 and keeps the last class only)."""

    name = "rppgd++"

    def __init__(self, model: nn.Module, eps: float = 0.03, alpha: float | None = None, steps: int = 3,
                 random_start: bool = True, variant: str = "described", w_region: float = 0.5, w_inter: float = 0.25,
                 w_intra: float = 0.25, tau: float = 0.9, intra_exclude: Sequence[int] = (), pool: str | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, seed: int | None = None,
                 ignore_index: int = 255, best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, variant=variant,
                         w_region=w_region, w_inter=w_inter, pool=pool, mean=mean, std=std, seed=seed,
                         ignore_index=ignore_index, best=best)
        check_range("w_intra", w_intra, float("-inf"), float("inf"))  # negative: study the term's sign
        check_range("tau", tau, 0.0, 1.0)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in intra_exclude):
            raise ValueError(f"intra_exclude must be a list of class ids; got {intra_exclude!r}")
        if self.switches.intra == "last" and intra_exclude:
            raise ValueError(f"intra_exclude cannot be set with variant={variant!r} (the released code always skips "
                             "class 0 and nothing else)")
        self.w_intra, self.tau, self.intra_exclude = float(w_intra), float(tau), tuple(int(c) for c in intra_exclude)
        self.intra_weight = self.w_intra

    def intra(self, protos: Prototypes) -> torch.Tensor:
        return intra_loss(protos, self.tau, self.intra_exclude, self.switches.intra)


def check_normalisation(mean: Sequence[float] | None, std: Sequence[float] | None, needed: bool
                        ) -> tuple[list[float] | None, list[float] | None]:
    """mean and std as lists of three floats (or None when not given); an error when `needed` and missing."""
    if needed and (mean is None or std is None):
        raise ValueError("the release variant's random start works in normalised space: pass mean=[r,g,b] and "
                         "std=[r,g,b], the model's normalisation (the config's DATA.mean and DATA.std)")
    out = []
    for name, value in (("mean", mean), ("std", std)):
        if value is not None and (len(value) != 3 or not all(isinstance(v, (int, float)) for v in value)):
            raise ValueError(f"{name} must be three numbers [r,g,b]; got {value!r}")
        out.append(None if value is None else [float(v) for v in value])
    return out[0], out[1]
