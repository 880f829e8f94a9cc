"""Peak memory of one call, on the CPU (resident set size, Linux) and on CUDA (the allocator), for benchmarks.

    peak = CudaPeak(device) if device.type == "cuda" else RssPeak()
    extra_bytes = peak.measure(lambda: fn())
"""
from __future__ import annotations

import ctypes
import ctypes.util
import gc
from typing import Callable

import torch

from util.errors import UserError

MIB = 1024 * 1024


class RssPeak:
    """Peak extra resident memory of a call on Linux: reset VmHWM via /proc/self/clear_refs, read it after."""

    method = ("peak RSS: glibc malloc_trim, then '5' > /proc/self/clear_refs (resets VmHWM), run, "
              "VmHWM after - VmRSS before")

    def __init__(self) -> None:
        try:
            self._reset()
            self._read("VmHWM")
        except OSError as exc:
            raise UserError(f"peak memory on the CPU needs Linux's /proc/self/clear_refs and /proc/self/status "
                            f"(kernel >= 4.0): {exc}") from exc
        libc_name = ctypes.util.find_library("c")
        libc = ctypes.CDLL(libc_name) if libc_name else None
        self._trim = getattr(libc, "malloc_trim", None)
        if self._trim is None:
            self.method = self.method.replace("glibc malloc_trim, then ", "") + " (no malloc_trim: freed heap " \
                "memory kept by the allocator can hide part of the peak)"

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    @staticmethod
    def _read(key: str) -> int:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) * 1024  # kB
        raise OSError(f"/proc/self/status has no {key} line")

    def measure(self, fn: Callable[[], object]) -> float:
        """Bytes by which the resident set grew at its peak while fn() ran."""
        gc.collect()
        if self._trim is not None:
            self._trim(0)  # give freed heap pages back, so that reusing them shows in the peak
        before = self._read("VmRSS")
        self._reset()
        result = fn()
        peak = self._read("VmHWM")
        del result
        return float(peak - before)

    def self_check(self) -> str:
        """Measure a freshly filled 64 MiB tensor; the method works when it reads about 64 MiB."""
        got = self.measure(lambda: torch.ones(16 * MIB, dtype=torch.float32).sum())
        status = "ok" if 60 * MIB <= got <= 80 * MIB else "UNRELIABLE"
        return f"self-check: a 64 MiB tensor measured {got / MIB:.1f} MiB ({status})"


class CudaPeak:
    method = "CUDA allocator: reset_peak_memory_stats, max_memory_allocated after - memory_allocated before"

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def measure(self, fn: Callable[[], object]) -> float:
        gc.collect()
        torch.cuda.synchronize(self.device)
        before = torch.cuda.memory_allocated(self.device)
        torch.cuda.reset_peak_memory_stats(self.device)
        result = fn()
        torch.cuda.synchronize(self.device)
        peak = torch.cuda.max_memory_allocated(self.device)
        del result
        return float(peak - before)

    def self_check(self) -> str:
        got = self.measure(lambda: torch.ones(16 * MIB, dtype=torch.float32, device=self.device).sum())
        status = "ok" if 63 * MIB <= got <= 66 * MIB else "UNRELIABLE"
        return f"self-check: a 64 MiB tensor measured {got / MIB:.1f} MiB ({status})"
