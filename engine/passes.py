"""Counting forward and backward passes through a model with module hooks (as adv_lib counts them).

    with PassCounter(model) as passes:
        atk(images, labels)
    passes.forward, passes.backward, passes.forward_samples
    check_passes(atk, passes)    # an attack that makes more passes than its definition needs is an error

A forward pass is one call of the model's forward; a backward pass is one backpropagation through its output
(a tensor hook on the logits, so gradients w.r.t. the input and w.r.t. the parameters both count).
"""
from __future__ import annotations

import torch
from torch import nn

from attack import APGD, SEA, Attack


class PassCounter:
    """Counts calls of `model.forward` and backward passes through its logits while the context is open."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forward = self.backward = self.forward_samples = 0
        self._handle = None

    def _on_forward(self, module: nn.Module, inputs: tuple, output) -> None:
        self.forward += 1
        self.forward_samples += len(inputs[0]) if inputs and torch.is_tensor(inputs[0]) else 0
        logits = output["out"] if isinstance(output, dict) else output
        if torch.is_tensor(logits) and logits.requires_grad:
            logits.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1

    def __enter__(self) -> "PassCounter":
        self._handle = self.model.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None


def expected_passes(attack: Attack) -> tuple[int, int]:
    """(forward, backward) passes one untraced call of `attack` needs by its definition: a step of the PGD family
    is one forward and one backward (FGSM is one step; with `best` the last iterate is judged too: one more
    forward); APGD judges its start point and each step, the last iterate without a gradient (steps + 1 forward,
    steps backward); SEA is APGD per stage and loss."""
    if isinstance(attack, SEA):
        stages = [stage["steps"] for stage in attack.stages()] * len(attack.run_names())
        return sum(s + 1 for s in stages), sum(stages)
    if isinstance(attack, APGD):
        return attack.steps + 1, attack.steps
    return attack.steps + (1 if attack.best else 0), attack.steps


def check_passes(attack: Attack, counter: PassCounter) -> None:
    """Raise when a call counted by `counter` made more passes through the model than expected_passes allows:
    work in the step loop beyond the attack's loss (a second forward, a backward through the parameters)."""
    forward, backward = expected_passes(attack)
    if counter.forward > forward or counter.backward > backward:
        raise RuntimeError(f"{attack.name}: one call made {counter.forward} forward and {counter.backward} backward "
                           f"passes through the model; its definition needs {forward} and {backward} "
                           f"({attack!r})")
