"""Counting forward and backward passes through a model with module hooks (as adv_lib counts them).

    with PassCounter(model) as passes:
        atk(images, labels)
    passes.forward, passes.backward, passes.forward_samples, passes.backward_samples
    check_passes(atk, passes, len(images))  # an attack that makes more passes than its definition needs is an error

A forward pass is one call of the model's forward; a backward pass is one backpropagation through its output
(a tensor hook on the logits, so gradients w.r.t. the input and w.r.t. the parameters both count).
"""
from __future__ import annotations

import torch
from torch import nn

from attack import Attack


class PassCounter:
    """Counts calls of `model.forward` and backward passes through its logits while the context is open."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.forward = self.backward = self.forward_samples = self.backward_samples = 0
        self._handle = None

    def _on_forward(self, module: nn.Module, inputs: tuple, output) -> None:
        self.forward += 1
        self.forward_samples += len(inputs[0]) if inputs and torch.is_tensor(inputs[0]) else 0
        logits = output["out"] if isinstance(output, dict) else output
        if torch.is_tensor(logits) and logits.requires_grad:
            logits.register_hook(self._on_backward)

    def _on_backward(self, grad: torch.Tensor) -> None:
        self.backward += 1
        self.backward_samples += len(grad)

    def __enter__(self) -> "PassCounter":
        self._handle = self.model.register_forward_hook(self._on_forward)
        return self

    def __exit__(self, *exc) -> None:
        self._handle.remove()
        self._handle = None


def check_passes(attack: Attack, counter: PassCounter, images: int) -> None:
    """Raise when a call counted by `counter` made more passes through the model than the attack's definition needs
    (attack.expected_passes(images), `images` the call's batch): work in the step loop beyond the attack's loss (a
    second forward, a backward through the parameters)."""
    forward, backward = attack.expected_passes(images)
    if counter.forward > forward or counter.backward > backward:
        raise RuntimeError(f"{attack.name}: one call made {counter.forward} forward and {counter.backward} backward "
                           f"passes through the model; its definition needs {forward} and {backward} "
                           f"({attack!r})")
