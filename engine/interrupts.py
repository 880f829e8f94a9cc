"""What stops a training run between two iterations, agreed by every process.

SIGTERM and SIGUSR1 (what clusters send before pre-emption) only raise a flag; after each iteration every process
learns whether any of them got a signal or saw a non-finite loss (one small all-reduce), so all of them stop at
the same iteration: after a signal with a checkpoint (engine/resume.py), on a non-finite loss without one.
"""
from __future__ import annotations

import signal
from types import FrameType

import torch

from util.distributed import DistEnv, all_reduce_sum

SIGNALS = (signal.SIGTERM, signal.SIGUSR1)


class StopRequests:
    """A context manager that turns SIGTERM/SIGUSR1 into a request checked after each iteration (`check`); the
    previous handlers come back on exit."""

    def __init__(self) -> None:
        self.received: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received = signum

    def __enter__(self) -> StopRequests:
        for s in SIGNALS:
            self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def check(self, losses: torch.Tensor, env: DistEnv) -> tuple[bool, bool]:
        """After an iteration with these losses (any shape): (a stop was requested on some process, a loss was
        non-finite on some process)."""
        flags = torch.tensor([float(self.received is not None), float(not bool(torch.isfinite(losses).all()))],
                             device=env.device)
        flags = all_reduce_sum(flags, env).cpu()
        return bool(flags[0] > 0), bool(flags[1] > 0)

    def name(self) -> str:
        """The signal received here ('a signal on another process' when it came to another one)."""
        return signal.Signals(self.received).name if self.received is not None else "a signal on another process"
