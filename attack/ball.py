"""The eps ball of an attack: projection onto it (intersected with [0,1]), random starts inside it, drawn per batch or
per image, and the ascent direction of a step (sign for L-inf, the normalised gradient for L2)."""
from __future__ import annotations

from typing import Callable, Sequence

import torch


def project(x: torch.Tensor, x_nat: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Projection onto the eps ball around x_nat (eps a float or (N,) per image) intersected with [0,1]."""
    delta = x - x_nat
    if norm == "linf":
        e = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1)
        delta = torch.maximum(torch.minimum(delta, e), -e)
    else:
        e = torch.as_tensor(eps, dtype=x.dtype, device=x.device).reshape(-1)
        scale = (e / delta.flatten(1).norm(dim=1).clamp(min=1e-12)).clamp(max=1.0)
        delta = delta * scale.view(-1, 1, 1, 1)
    return (x_nat + delta).clamp(0.0, 1.0)


class RandomSource:
    """Where an attack's random draws come from: the global RNG (no seed), one generator for the batch (`seed`),
    or one generator per image (`seeds`, one int per image), so that an image's random start does not depend
    on the batch it is attacked in (robust evaluation seeds each image by its dataset index)."""

    def __init__(self, device: torch.device, seed: int | None = None, seeds: Sequence[int] | None = None) -> None:
        self.per_image = None if seeds is None else [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]
        self.batch = None if seed is None or seeds is not None else torch.Generator(device=device).manual_seed(seed)

    def rand(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """U[0,1) of `shape` (N first) with the dtype and device of `like`."""
        return self._draw(torch.rand, shape, like)

    def randn(self, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        """N(0,1) of `shape` (N first) with the dtype and device of `like`."""
        return self._draw(torch.randn, shape, like)

    def _draw(self, fn: Callable, shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
        kw = {"device": like.device, "dtype": like.dtype}
        if self.per_image is None:
            return fn(tuple(shape), generator=self.batch, **kw)
        if len(self.per_image) != shape[0]:
            raise ValueError(f"seeds holds {len(self.per_image)} values for a batch of {shape[0]} images")
        return torch.cat([fn((1, *shape[1:]), generator=g, **kw) for g in self.per_image])


def uniform_start(x_nat: torch.Tensor, radius: float, random: RandomSource) -> torch.Tensor:
    """clip01(x_nat + U(-radius, radius)), elementwise."""
    noise = random.rand(x_nat.shape, x_nat)
    return (x_nat + (2 * noise - 1) * radius).clamp(0.0, 1.0)


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """sign(grad) for L-inf; grad / ||grad||_2 per image for L2 (0 where the gradient is 0)."""
    if norm == "linf":
        return grad.sign()
    return grad / grad.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
