"""RP-PGD and RP-PGD++ (Zhang et al., AAAI 2025), METHOD.md §4.

Each step maximises L = w_region * L_R + w_inter * L_inter (+ w_intra * L_intra for RP-PGD++): the region loss
of attack/regions.py on the current iterate plus the prototype terms of attack/prototypes.py computed on the
backbone features (`model(x, return_dict=True)["feat"]`).

`variant="described"` (default) follows the paper's definition. `variant="release"` reproduces the authors'
released training code: features detached before the prototype terms (they are computed for the trace only,
so the attack is the region-weighted CE alone), a random start drawn in normalised space (see `start`), the
schedule on the 0-based index, ignored pixels in the False region, L_intra of the last class only (class 0
skipped), L_inter twice the mean, and prototypes pooled over the batch (pool="batch").
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from attack.base import Attack, RandomSource, check_choice, check_range
from attack.losses import ce_map, predictions, valid_mask
from attack.prototypes import class_prototypes, inter_loss, intra_loss, to_grid
from attack.regions import TRUE, initial_regions, region_loss, region_weights, update_regions

VARIANTS = ("described", "release")
POOLS = ("image", "batch")


class RPPGD(Attack):
    """RP-PGD: region loss + inter-class prototype similarity. Training defaults eps 0.03, 3 steps, alpha 0.01."""

    name = "rppgd"
    needs_features = True
    has_intra = False

    def __init__(self, model: nn.Module, eps: float = 0.03, alpha: float = 0.01, steps: int = 3,
                 random_start: bool = True, variant: str = "described", w_region: float = 0.5, w_inter: float = 0.25,
                 pool: str | None = None, mean: Sequence[float] | None = None, std: Sequence[float] | None = None,
                 seed: int | None = None, ignore_index: int = 255, best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, seed=seed,
                         ignore_index=ignore_index, best=best)
        check_choice("variant", variant, VARIANTS)
        pool = pool if pool is not None else ("image" if variant == "described" else "batch")
        check_choice("pool", pool, POOLS)
        check_range("w_region", w_region, 0.0, float("inf"))
        check_range("w_inter", w_inter, 0.0, float("inf"))
        self.variant, self.pool = variant, pool
        self.w_region, self.w_inter, self.w_intra = float(w_region), float(w_inter), 0.0
        self.mean, self.std = self._normalisation(mean, std)

    def _normalisation(self, mean, std) -> tuple[list[float] | None, list[float] | None]:
        """The release start needs the model's normalisation: given, or read from `model.normalize`."""
        if self.variant != "release" or not self.random_start:
            return (list(mean) if mean is not None else None), (list(std) if std is not None else None)
        norm_layer = getattr(self.model, "normalize", None)
        if mean is None and norm_layer is not None and hasattr(norm_layer, "mean"):
            mean = norm_layer.mean.flatten().tolist()
        if std is None and norm_layer is not None and hasattr(norm_layer, "std"):
            std = norm_layer.std.flatten().tolist()
        if mean is None or std is None or len(mean) != 3 or len(std) != 3:
            raise ValueError("the release variant's random start works in normalised space: pass mean=[r,g,b] and "
                             "std=[r,g,b] (the model has no model.normalize.mean/std to read them from)")
        return [float(v) for v in mean], [float(v) for v in std]

    def params(self) -> dict:
        out = {**super().params(), "variant": self.variant, "w_region": self.w_region, "w_inter": self.w_inter,
               "pool": self.pool}
        out.pop("norm")
        if self.mean is not None:
            out.update(mean=self.mean, std=self.std)
        return out

    @property
    def start_is_feasible(self) -> bool:
        return not (self.variant == "release" and self.random_start)

    def start(self, x_nat: torch.Tensor, random: RandomSource) -> torch.Tensor:
        """described: the PGD start. release: z = clamp((x - mean)/std + U(-eps,eps), 0, 1) in normalised space,
        mapped back to pixels: per channel c within [mean_c, mean_c + std_c], generally outside the eps ball
        (the first step's projection pulls it back)."""
        if self.variant == "described" or not self.random_start:
            return super().start(x_nat, random)
        mean = torch.tensor(self.mean, dtype=x_nat.dtype, device=x_nat.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=x_nat.dtype, device=x_nat.device).view(1, 3, 1, 1)
        noise = random.rand(x_nat.shape, x_nat)
        z = ((x_nat - mean) / std + (2 * noise - 1) * self.eps).clamp(0.0, 1.0)
        return (z * std + mean).clamp(0.0, 1.0)

    def init_state(self, x_nat: torch.Tensor, labels: torch.Tensor) -> dict:
        return {"regions": None, "terms": []}

    def objective(self, out: dict, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        logits, feat = out["out"], out["feat"]
        valid = valid_mask(labels, self.ignore_index)
        if self.variant == "release":  # ignored pixels are never correct, so they land in FALSE
            valid = torch.ones_like(valid)
        correct = (predictions(logits) == labels) & valid
        if state["regions"] is None:
            state["regions"] = initial_regions(correct, valid)
        else:
            state["regions"] = update_regions(state["regions"], correct)
        regions = state["regions"]
        per_image = self.pool == "image"

        l_region = region_loss(ce_map(logits, labels, self.ignore_index), regions,
                               region_weights(step, self.steps, self.variant), per_image)
        if self.variant == "release":
            feat = feat.detach()
        grid = tuple(feat.shape[-2:])
        in_true = to_grid(regions, grid) == TRUE
        protos = class_prototypes(feat, to_grid(labels, grid), in_true, logits.shape[1], self.pool)
        l_inter = inter_loss(protos, self.variant)
        l_intra = self.intra(protos)
        if not per_image:
            l_inter, l_intra = l_inter.squeeze(0), l_intra.squeeze(0)
        # kept as tensors: converting to floats here would synchronise a GPU at every step
        state["terms"].append({"step": step, "region": l_region.detach().mean(), "inter": l_inter.detach().mean(),
                               "intra": l_intra.detach().mean()})
        return self.w_region * l_region + self.w_inter * l_inter + self.w_intra * l_intra

    def intra(self, protos) -> torch.Tensor:
        return protos.protos.new_zeros(protos.present.shape[0])


class RPPGDPlusPlus(RPPGD):
    """RP-PGD++: RP-PGD plus the intra-class term (similarities split at `tau`, classes in `intra_exclude`
    skipped; the release variant always skips class 0 and keeps the last class only)."""

    name = "rppgd++"
    has_intra = True

    def __init__(self, model: nn.Module, eps: float = 0.03, alpha: float = 0.01, steps: int = 3,
                 random_start: bool = True, variant: str = "described", w_region: float = 0.5, w_inter: float = 0.25,
                 w_intra: float = 0.25, tau: float = 0.9, intra_exclude: Sequence[int] = (), pool: str | None = None,
                 mean: Sequence[float] | None = None, std: Sequence[float] | None = None, seed: int | None = None,
                 ignore_index: int = 255, best: bool = False) -> None:
        super().__init__(model, eps=eps, alpha=alpha, steps=steps, random_start=random_start, variant=variant,
                         w_region=w_region, w_inter=w_inter, pool=pool, mean=mean, std=std, seed=seed,
                         ignore_index=ignore_index, best=best)
        check_range("w_intra", w_intra, 0.0, float("inf"))
        check_range("tau", tau, 0.0, 1.0)
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 0 for c in intra_exclude):
            raise ValueError(f"intra_exclude must be a list of class ids; got {intra_exclude!r}")
        if variant == "release" and intra_exclude:
            raise ValueError("intra_exclude cannot be set with variant='release' (the released code always skips "
                             "class 0 and nothing else)")
        self.w_intra, self.tau, self.intra_exclude = float(w_intra), float(tau), tuple(int(c) for c in intra_exclude)

    def params(self) -> dict:
        out = super().params()
        out.update(w_intra=self.w_intra, tau=self.tau, intra_exclude=list(self.intra_exclude))
        return out

    def intra(self, protos) -> torch.Tensor:
        return intra_loss(protos, self.tau, self.intra_exclude, self.variant)
