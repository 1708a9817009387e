"""Array-module backends for the batched engine: numpy/scipy on the CPU, CuPy on a GPU.

The engine is written once against :class:`Backend`; only how arrays are placed, transformed and
scattered differs. CuPy is an optional extra (``pip install cosmic-dagster[gpu]``): this module
imports without it, and ``device="auto"`` quietly falls back to the CPU when no usable GPU is found.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np
from scipy import fft as scipy_fft

DEVICES = ("auto", "cpu", "gpu")
#: Bytes of complex64 frames transformed together on the CPU: 512 KiB (4 frames of 128², 1 of 256²)
#: keep a group's buffers in the L2 cache.
CPU_GROUP_BYTES = 512 * 2**10


class BackendUnavailable(ValueError):
    """The requested device cannot be used (no CuPy, no CUDA device, a broken driver); a
    ValueError so the job command reports it as a failed run with one ``error:`` line."""


@dataclass(frozen=True, eq=False)
class Backend:
    """Where and how the engine's arrays live.

    Batches are split into ``workers`` chunks processed by threads (numpy and scipy.fft release
    the GIL); frames are transformed together in groups of about ``group_bytes`` (at least one
    frame; None: the whole chunk); ``indexed`` gathers and scatters object patches through index
    arrays (one kernel per batch, as a GPU needs) instead of a Python loop over slices (faster on
    a CPU).
    """

    device: str
    xp: ModuleType
    fft2: Callable[[Any], Any]
    ifft2: Callable[[Any], Any]
    add_at: Callable[[Any, Any, Any], None]
    workers: int = 1
    group_bytes: int | None = None
    indexed: bool = True
    memory: Any = None
    """CuPy's memory pool on a GPU, None on the CPU."""

    def to_device(self, host: np.ndarray) -> Any:
        return self.xp.asarray(host)

    def to_host(self, array: Any) -> np.ndarray:
        return array.get() if self.device == "gpu" else np.asarray(array)

    def free_bytes(self) -> int | None:
        """Device memory still available to this process (None: host memory, not budgeted)."""
        if self.memory is None:
            return None
        free, _total = self.xp.cuda.Device().mem_info
        return int(free) + int(self.memory.free_bytes())

    def held_bytes(self) -> int:
        """Device memory this process holds now (0 on the CPU)."""
        return 0 if self.memory is None else int(self.memory.total_bytes())

    def release_cached(self) -> None:
        """Give the memory pool's unused blocks back to the device (after a failed allocation)."""
        if self.memory is not None:
            self.memory.free_all_blocks()

    def synchronize(self) -> None:
        if self.device == "gpu":
            self.xp.cuda.Stream.null.synchronize()


def cpu_backend(
    workers: int | None = None, *, indexed: bool = False, group_bytes: int | None = CPU_GROUP_BYTES
) -> Backend:
    """numpy + scipy.fft; ``workers`` threads (default: the cores this process may use)."""
    workers = len(os.sched_getaffinity(0)) if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")

    def fft2(a: np.ndarray) -> np.ndarray:
        return scipy_fft.fft2(a, axes=(-2, -1), workers=1, overwrite_x=True)

    def ifft2(a: np.ndarray) -> np.ndarray:
        return scipy_fft.ifft2(a, axes=(-2, -1), workers=1, overwrite_x=True)

    return Backend("cpu", np, fft2, ifft2, np.add.at, workers, group_bytes, indexed)


def gpu_backend() -> Backend:
    """CuPy on the current CUDA device; raises :class:`BackendUnavailable` with the reason."""
    try:
        cupy = importlib.import_module("cupy")
        cupyx = importlib.import_module("cupyx")
        cupy_fft = importlib.import_module("cupyx.scipy.fft")
        count = cupy.cuda.runtime.getDeviceCount()
    except ImportError as exc:
        raise BackendUnavailable(f"CuPy is not importable ({exc}); install cosmic-dagster[gpu]") from exc
    except Exception as exc:  # CUDA driver/runtime errors come as CuPy-specific types
        raise BackendUnavailable(f"CUDA is not usable: {type(exc).__name__}: {exc}") from exc
    if count < 1:
        raise BackendUnavailable("CuPy found no CUDA device")

    def fft2(a: Any) -> Any:
        return cupy_fft.fft2(a, axes=(-2, -1), overwrite_x=True)

    def ifft2(a: Any) -> Any:
        return cupy_fft.ifft2(a, axes=(-2, -1), overwrite_x=True)

    return Backend("gpu", cupy, fft2, ifft2, cupyx.scatter_add, memory=cupy.get_default_memory_pool())


def select(device: str = "auto", *, workers: int | None = None) -> Backend:
    """The backend for a run config's ``device``: ``auto`` takes the GPU when one is usable."""
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(DEVICES)}, got {device!r}")
    if device == "cpu":
        return cpu_backend(workers)
    try:
        return gpu_backend()
    except BackendUnavailable:
        if device == "gpu":
            raise
        return cpu_backend(workers)
