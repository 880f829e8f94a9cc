"""What every attack shares: the call contract, random start, step, projection, best iterate and trace.

Contract (docs/design.md, Attack): `atk(images, labels)` takes images (N,3,H,W) in [0,1] and labels (N,H,W) long
(ignore_index excluded everywhere) and returns a new detached tensor of the same shape, dtype and device,
inside [0,1] and within eps of `images`. The model runs in eval mode during the attack and every module's
train/eval flag is restored afterwards; gradients are taken with torch.autograd.grad w.r.t. the input only,
so model parameter `.grad` is never touched; `seed` makes random starts reproducible.

A subclass defines `objective(out, labels, step, state)`: the quantity maximised at step t (1-based), per
image (N,) or for the whole batch (scalar). Everything else is here.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import torch
from torch import nn

from attack.ball import RandomSource, ascent_direction, project, uniform_start
from attack.losses import check_labels, predictions, valid_mask

NORMS = ("linf", "l2")


@dataclass
class StepRecord:
    """One judged iterate x_step (step 0 is the start) of an attack run."""
    step: int
    loss: float        # the objective at this iterate (mean over images, or the batch value when pooled)
    pixel_acc: float   # correct / valid pixels over the batch (agreement with the target when targeted)
    # what the attack adds about this iterate (Attack.step_extras): APGD's "step_size" and "stage", RP-PGD's
    # "region", "inter" and "intra" terms; numbers are means over the batch
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class AttackResult:
    adv: torch.Tensor                       # (N,3,H,W) adversarial images
    trace: list[StepRecord] = field(default_factory=list)
    # what the attack adds about the run (Attack.result_extras): RP-PGD's final "regions" map (N,H,W) uint8
    extras: dict[str, Any] = field(default_factory=dict)
    # images (batch positions) with valid pixels whose input gradient was zero at every step: possible masking
    zero_gradient: list[int] = field(default_factory=list)


class NonFiniteError(RuntimeError):
    """An attack's loss or input gradient turned non-finite; `images` are the batch positions where it did."""

    def __init__(self, message: str, images: list[int]) -> None:
        super().__init__(message)
        self.images = images


class Recorder(list):
    """What one call of an attack records: the StepRecords of the run, an optional callback on_iterate(step, logits
    (N,K,H,W)) per judged iterate, and per image (N,) whether a loss or input gradient turned non-finite
    ("non_finite") and whether a non-zero input gradient was seen ("gradient_seen"). A Recorder belongs to one call,
    so the attack object itself keeps nothing of a call and can serve several, even nested ones."""

    def __init__(self, on_iterate: Callable[[int, torch.Tensor], None] | None = None, active: bool = True,
                 images: int = 0, device: torch.device | str = "cpu") -> None:
        super().__init__()
        self.on_iterate, self.active = on_iterate, active or on_iterate is not None
        self.checks = {"non_finite": torch.zeros(images, dtype=torch.bool, device=device),
                       "gradient_seen": torch.zeros(images, dtype=torch.bool, device=device)}

    def note_gradient(self, loss: torch.Tensor, grad: torch.Tensor) -> None:
        """Note, per image, a non-finite loss or gradient and whether the gradient was non-zero (read once, at the
        end of the call: nothing here waits for a GPU)."""
        n = grad.shape[0]
        finite = torch.isfinite(grad).flatten(1).all(1) & torch.isfinite(loss.detach()).expand(n)
        self.checks["non_finite"] |= ~finite
        self.checks["gradient_seen"] |= grad.flatten(1).abs().amax(1) > 0


def check_choice(name: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(repr(c) for c in choices)}; got {value!r}")


def check_range(name: str, value: float, low: float, high: float, low_open: bool = False) -> None:
    ok = (low < value if low_open else low <= value) and value <= high
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{name} must be a number in {bracket}{low}, {high}]; got {value!r}")


class Attack:
    """Base class of all attacks; see the module docstring for the contract."""

    name = "attack"
    norms: tuple[str, ...] = ("linf",)
    needs_features = False  # True: the model is called with return_dict=True and must return "feat"

    def __init__(self, model: nn.Module, *, eps: float, alpha: float | None, steps: int, random_start: bool,
                 norm: str = "linf", seed: int | None = None, ignore_index: int = 255, best: bool = False) -> None:
        check_range("eps", eps, 0.0, 1.0)
        if alpha is not None:  # None: the attack sets its own step sizes (APGD)
            check_range("alpha", alpha, 0.0, 1.0 if norm == "linf" else float("inf"), low_open=True)
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be an integer >= 1; got {steps!r}")
        check_choice("norm", norm, self.norms)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an integer or None; got {seed!r}")
        if not isinstance(model, nn.Module):
            raise ValueError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if self.needs_features and "return_dict" not in inspect.signature(model.forward).parameters:
            raise ValueError(f"{self.name} needs the model's backbone features: model.forward must accept "
                             "return_dict=True and then return a dict with 'out' (logits) and 'feat' (N,C,h,w), "
                             f"but {type(model).__name__}.forward has no return_dict parameter")
        self.model = model
        self.eps, self.alpha, self.steps = float(eps), (None if alpha is None else float(alpha)), steps
        self.random_start, self.norm, self.seed = bool(random_start), norm, seed
        self.ignore_index, self.best = int(ignore_index), bool(best)

    # ---- description -------------------------------------------------------------------------------------
    # constructor parameters that the registry name already fixes (APGD's loss): in repr(), not in params()
    fixed_by_name: tuple[str, ...] = ()

    def arguments(self) -> dict:
        """Every constructor argument as the attack holds it, read from the constructor's signature: a subclass
        keeps each argument under its own name (tuples are listed as lists, for JSON)."""
        names = [n for n in inspect.signature(type(self).__init__).parameters if n not in ("self", "model")]
        return {n: plain(getattr(self, n)) for n in names}

    def params(self) -> dict:
        """Every hyper-parameter: build_attack(self.name, model, **params()) rebuilds the attack."""
        return {k: v for k, v in self.arguments().items() if k not in self.fixed_by_name}

    def config(self) -> dict:
        """{"name": registry name, **params()}: enough to rebuild the attack with build_attack."""
        return {"name": self.name, **self.params()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.arguments().items())
        return f"{type(self).__name__}({args})"

    # ---- entry points ------------------------------------------------------------------------------------
    def __call__(self, images: torch.Tensor, labels: torch.Tensor, seeds: Sequence[int] | None = None
                 ) -> torch.Tensor:
        """Adversarial images (N,3,H,W) for `images` (N,3,H,W) in [0,1] and `labels` (N,H,W).

        seeds: one int per image; image i's random draws then come from its own generator seeded with seeds[i]
        (instead of `seed`), so its result does not depend on the other images of the batch.
        """
        return self.run(images, labels, trace=False, seeds=seeds).adv

    def run(self, images: torch.Tensor, labels: torch.Tensor, trace: bool = True,
            on_iterate: Callable[[int, torch.Tensor], None] | None = None,
            seeds: Sequence[int] | None = None) -> AttackResult:
        """Attack and return the adversarial images with the per-step trace and the attack's extras.

        on_iterate(step, logits) is called with the detached logits of every judged iterate x_0 .. x_T (for
        convergence curves); judging the last iterate costs one extra forward pass. seeds: see __call__.
        """
        self._check_inputs(images, labels)
        if seeds is not None:
            seeds = [int(s) for s in seeds]
            if len(seeds) != images.shape[0]:
                raise ValueError(f"seeds must hold one int per image: {len(seeds)} for {images.shape[0]} images")
        modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        records = Recorder(on_iterate, active=trace, images=images.shape[0], device=images.device)
        try:
            with torch.enable_grad():
                result = self._attack(images.detach(), labels.detach(), records,
                                      lambda: RandomSource(images.device, self.seed, seeds))
        finally:
            for m, training in modes:
                m.training = training
        checks = records.checks
        if bool(checks["non_finite"].any()):  # one check per call, after the loop
            bad = checks["non_finite"].nonzero().flatten().tolist()
            raise NonFiniteError(f"{self.name}: the loss or its input gradient turned non-finite for image(s) {bad} "
                                 f"of the batch (positions from 0)", bad)
        masked = valid_mask(labels, self.ignore_index).flatten(1).any(1) & ~checks["gradient_seen"]
        result.zero_gradient = masked.nonzero().flatten().tolist()
        result.adv = result.adv.to(images.dtype).detach()
        result.trace = list(records) if trace else []
        return result

    # ---- pieces subclasses override ----------------------------------------------------------------------
    def init_state(self, x_nat: torch.Tensor, labels: torch.Tensor) -> dict:
        """Per-run state the objective may keep across steps (RP-PGD's regions)."""
        return {}

    def step_extras(self, state: dict) -> dict[str, Any]:
        """What a traced StepRecord adds about the iterate just judged (tensors are averaged): nothing here."""
        return {}

    def result_extras(self, state: dict) -> dict[str, Any]:
        """What AttackResult.extras holds at the end of a run: nothing here."""
        return {}

    def run_names(self) -> list[str]:
        """Names of the separate runs whose adversarial images AttackResult.extras["runs"] holds (SEA's losses):
        none here."""
        return []

    def expected_passes(self, images: int) -> tuple[int, int]:
        """(forward, backward) passes through the model that one untraced call on a batch of `images` needs by the
        attack's definition (a pass is one call of the model, whatever its batch): a step of the PGD family is one
        forward and one backward; with `best` the last iterate is judged too (one more forward)."""
        return self.steps + (1 if self.best else 0), self.steps

    def region_history(self) -> Callable[[int, torch.Tensor, torch.Tensor], None] | None:
        """For an attack that keeps region maps over its steps (RP-PGD), a fresh recorder of them: called as
        on_iterate(step, logits (N,K,H,W), labels (N,H,W)) with every judged iterate, it rebuilds the maps with the
        attack's own rules (attack.regions.RegionHistory). None for attacks without regions."""
        return None

    def objective(self, out: Any, labels: torch.Tensor, step: int, state: dict) -> torch.Tensor:
        """The loss maximised at step `step` (1-based): (N,) per image or a scalar for the batch."""
        raise NotImplementedError

    def logits_of(self, out: Any) -> torch.Tensor:
        return out["out"] if isinstance(out, dict) else out

    def targets(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels the trace's pixel accuracy is measured against (the target map for targeted attacks)."""
        return labels

    @property
    def maximise(self) -> bool:
        """False for targeted attacks, which descend their loss toward the target."""
        return True

    @property
    def start_is_feasible(self) -> bool:
        """Whether x_0 lies in the eps ball (the release RP-PGD start does not), so `best` may return it."""
        return True

    # ---- machinery ---------------------------------------------------------------------------------------
    def _check_inputs(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or not images.is_floating_point():
            raise ValueError(f"images must be a float tensor (N,3,H,W); got {images.dtype} {tuple(images.shape)}")
        if labels.dtype != torch.long or labels.shape != (images.shape[0], *images.shape[2:]):
            raise ValueError(f"labels must be a long tensor (N,H,W) = {(images.shape[0], *images.shape[2:])}; "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        if images.numel() and (images.min() < 0 or images.max() > 1):
            raise ValueError("images must lie in [0,1] (normalisation belongs inside the model)")

    def start(self, x_nat: torch.Tensor, random: RandomSource) -> torch.Tensor:
        """x_0: the clean image, or a uniform random point of the eps ball (pixel space) clipped to [0,1]."""
        if not self.random_start or self.eps == 0:
            return x_nat.clone()
        if self.norm == "linf":
            return uniform_start(x_nat, self.eps, random)
        direction = random.randn(x_nat.shape, x_nat)
        radius = random.rand((x_nat.shape[0], 1, 1, 1), x_nat)
        direction = direction / direction.flatten(1).norm(dim=1).clamp(min=1e-12).view(-1, 1, 1, 1)
        return project(x_nat + direction * radius * self.eps, x_nat, self.eps, "l2")

    def forward(self, x: torch.Tensor) -> Any:
        out = self.model(x, return_dict=True) if self.needs_features else self.model(x)
        logits = self.logits_of(out)
        if logits.dim() != 4 or logits.shape[0] != x.shape[0] or logits.shape[2:] != x.shape[2:]:
            raise ValueError(f"the model must return logits (N,K,H,W) at input resolution {tuple(x.shape[2:])}; "
                             f"got {tuple(logits.shape)}")
        if self.needs_features and (not isinstance(out, dict) or out.get("feat") is None):
            raise ValueError(f"{self.name} needs model(x, return_dict=True) to return a dict with 'feat'")
        return out

    def loss_and_grad(self, x: torch.Tensor, labels: torch.Tensor, step: int, state: dict, records: Recorder
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Objective (N,) or scalar (detached), its gradient w.r.t. x, and the logits (detached); the call's
        `records` notes non-finite values and zero gradients per image."""
        x = x.detach().requires_grad_(True)
        out = self.forward(x)
        if step == 1:
            check_labels(self.logits_of(out), labels, self.ignore_index)
        loss = self.objective(out, labels, step, state)
        grad = None
        if loss.requires_grad:
            grad = torch.autograd.grad(loss.sum(), x, allow_unused=True)[0]
        if grad is None:  # a loss without any path to x (e.g. every pixel ignored) has zero gradient
            grad = torch.zeros_like(x)
        records.note_gradient(loss, grad)  # checked once, at the end of run()
        return loss.detach(), grad, self.logits_of(out).detach()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, labels: torch.Tensor, step: int, state: dict
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective and logits at x without a gradient (the final iterate)."""
        out = self.forward(x)
        return self.objective(out, labels, step, state), self.logits_of(out)

    def pixel_accuracy(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per image accuracy (N,) over valid pixels (0 for an all-ignored image) and correct/valid counts (2,)."""
        target = self.targets(labels)
        valid = valid_mask(target, self.ignore_index)
        correct = (predictions(logits) == target) & valid
        c, v = correct.flatten(1).sum(1), valid.flatten(1).sum(1)
        return c.double() / v.clamp(min=1), torch.stack([c.sum(), v.sum()])

    def record(self, records: Recorder, step: int, loss: torch.Tensor, logits: torch.Tensor,
               labels: torch.Tensor, state: dict) -> torch.Tensor:
        """Per-image pixel accuracy (N,) of an iterate; when the run is traced, also append a StepRecord (with
        step_extras(state)) and call on_iterate. Untraced runs never convert to Python numbers, so they never
        wait for a GPU."""
        acc, counts = self.pixel_accuracy(logits, labels)
        if records.active:
            extra = {k: float(v.double().mean()) if torch.is_tensor(v) else v
                     for k, v in self.step_extras(state).items()}
            records.append(StepRecord(step=step, loss=float(loss.float().mean()),
                                      pixel_acc=float(counts[0]) / max(int(counts[1]), 1), extra=extra))
            if records.on_iterate is not None:
                records.on_iterate(step, logits)
        return acc

    def badness(self, acc: torch.Tensor) -> torch.Tensor:
        """Lower is a stronger attack: pixel accuracy, or minus the target agreement when targeted."""
        return acc if self.maximise else -acc

    def step(self, x: torch.Tensor, grad: torch.Tensor, x_nat: torch.Tensor, state: dict) -> torch.Tensor:
        """x_t = clip01(P_eps(x_{t-1} +- alpha * direction(grad))); `state` is the run's (an optimiser keeps its
        moments there)."""
        direction = ascent_direction(grad, self.norm)
        if not self.maximise:
            direction = -direction
        return project(x + self.alpha * direction, x_nat, self.eps, self.norm)

    def _attack(self, x_nat: torch.Tensor, labels: torch.Tensor, records: Recorder,
                random: Callable[[], RandomSource]) -> AttackResult:
        """The attack proper; random() gives a fresh source of the run's random draws."""
        judge = records.active or self.best
        state = self.init_state(x_nat, labels)
        x = self.start(x_nat, random())
        best_x, best_score = x.clone(), None
        for t in range(1, self.steps + 1):
            loss, grad, logits = self.loss_and_grad(x, labels, t, state, records)
            if judge:
                score = self.badness(self.record(records, t - 1, loss, logits, labels, state))
                if t > 1 or self.start_is_feasible:
                    best_x, best_score = keep_best(best_x, best_score, x, score)
            x = self.step(x, grad, x_nat, state)
        extras = self.result_extras(state)  # the state of the last step: the same whether the run is judged or not
        if judge:
            loss, logits = self.evaluate(x, labels, self.steps, state)
            score = self.badness(self.record(records, self.steps, loss, logits, labels, state))
            best_x, best_score = keep_best(best_x, best_score, x, score)
        return AttackResult(adv=best_x if self.best else x, extras=extras)


def plain(value: Any) -> Any:
    """A parameter value as JSON shows it: tuples as lists."""
    return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def keep_best(best_x: torch.Tensor | None, best_score: torch.Tensor | None, x: torch.Tensor, score: torch.Tensor,
              ties: str = "earlier") -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, keep x where its score (N,) is lower than the best so far (x itself when there is no best yet,
    best_score None); on a tie the earlier x stays (ties="earlier") or x replaces it (ties="later", APGD's rule)."""
    check_choice("ties", ties, ("earlier", "later"))
    if best_score is None:
        return x.clone(), score.clone()
    better = score < best_score if ties == "earlier" else score <= best_score
    return torch.where(better.view(-1, 1, 1, 1), x, best_x), torch.where(better, score, best_score)
