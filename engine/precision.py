"""Mixed precision (TRAIN.amp, ATTACK.amp): autocast contexts and the fp16 grad scaler.

`none` is fp32 everywhere (the default, so published figures stay comparable). `bf16` runs the network's
matrix products and convolutions in bfloat16 under torch.autocast, on CUDA or on the CPU. `fp16` needs CUDA: its
small exponent range needs a grad scaler for training, which is saved in the checkpoints. Under autocast an
attack's perturbation, its step, projection and clipping stay in fp32 (they are elementwise operations on the fp32
images, which autocast leaves alone), so the eps ball and [0,1] hold exactly; only the passes through the network
are cheaper. (An fp16 attack takes its gradient without loss scaling: bf16, with fp32's exponent range, is the
precision to use for attacks.)
"""
from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch

from util.errors import UserError

AMPS = ("none", "bf16", "fp16")


def check_amp(amp: str, device: torch.device, key: str) -> None:
    """A UserError naming `key` when the precision is unknown or fp16 is asked for without CUDA."""
    if amp not in AMPS:
        raise UserError(f"{key} must be one of {', '.join(AMPS)}, got {amp!r}")
    if amp == "fp16" and torch.device(device).type != "cuda":
        raise UserError(f"{key} fp16 needs CUDA (half-precision kernels and a grad scaler); on the CPU use {key} "
                        f"bf16 (CPU autocast) or none")


def autocast(amp: str, device: torch.device | str) -> AbstractContextManager:
    """The autocast context of a precision on a device (a null context for none)."""
    if amp == "none":
        return nullcontext()
    device = torch.device(device)
    check_amp(amp, device, "amp")
    return torch.autocast(device.type, dtype=torch.bfloat16 if amp == "bf16" else torch.float16)


def grad_scaler(amp: str, device: torch.device | str) -> torch.amp.GradScaler | None:
    """A grad scaler for fp16 training on CUDA; None otherwise (bf16 and fp32 need none)."""
    if amp != "fp16":
        return None
    check_amp(amp, torch.device(device), "TRAIN.amp")
    return torch.amp.GradScaler("cuda")
