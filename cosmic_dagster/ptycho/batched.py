"""Mini-batch PIE: frames processed in batches, written once over an array module (numpy or CuPy).

Each iteration visits the frames in a random order (seeded) cut into batches. Within a batch every
exit wave is formed from the same object and probe; the corrections of all its frames are summed
and divided by the summed illumination (object) or summed object intensity (probe), regularised
towards the maximum as in rPIE, so overlapping frames of one batch average instead of overshooting.
Random batches are spread over the sample and overlap little, so a batch step is close to the
sequential ePIE steps it replaces while costing one batched transform. The same seed and batch
size give the same batches on every device, so CPU and GPU runs agree to single precision.

On a CPU each batch is split over threads (numpy and scipy.fft release the GIL) and transformed a
few frames at a time so the working set stays in cache; on a GPU the whole batch is one kernel
sequence. The amplitudes go to the device once; when they do not fit its free memory, they stay in
host memory and each batch's frames are copied in (streaming).

    python -m cosmic_dagster.ptycho.batched INPUT.cxi OUTPUT.h5 --iterations 100 --device auto
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from cosmic_dagster.ptycho import cxi, epie, focus, lowcount
from cosmic_dagster.ptycho import xp as backends

ENGINE = "batched"
#: Batches per iteration when the batch size is not given (at most MAX_DEFAULT_BATCH frames each).
DEFAULT_BATCHES_PER_ITERATION = 4
MAX_DEFAULT_BATCH = 512
#: rPIE-style regularisation of the summed-weight denominators (0: pure average, 1: ePIE's maximum).
DEFAULT_OBJECT_REGULARISATION = 0.1
DEFAULT_PROBE_REGULARISATION = 0.1
#: Fraction of the device's free memory the resident frames and one batch's workspace may take
#: (the rest is for cuFFT plans and temporaries).
_MEMORY_HEADROOM = 0.8
_TINY = np.float32(1e-12)


def default_batch_size(n_frames: int) -> int:
    """A batch size that depends on the scan only, so every device cuts the same batches."""
    return max(1, min(MAX_DEFAULT_BATCH, math.ceil(n_frames / DEFAULT_BATCHES_PER_ITERATION)))


def reconstruct(
    scan: cxi.ScanData,
    iterations: int = epie.DEFAULT_ITERATIONS,
    *,
    probe_refine_start: int = epie.DEFAULT_PROBE_REFINE_START,
    alpha: float = 1.0,
    beta: float = 1.0,
    probe_defocus_m: float | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    object_regularisation: float = DEFAULT_OBJECT_REGULARISATION,
    probe_regularisation: float = DEFAULT_PROBE_REGULARISATION,
    backend: backends.Backend | None = None,
    device: str = "auto",
    memory_budget_bytes: int | None = None,
    progress: Callable[[int, float], None] | None = None,
) -> epie.Reconstruction:
    """Run mini-batch PIE; parameters and ``fourier_error`` mean what they mean in :func:`epie.reconstruct`
    (``probe_defocus_m`` None: auto-focus, with short trials of this engine on the same device).

    ``backend`` (default: :func:`xp.select` of ``device``) decides where it runs;
    ``memory_budget_bytes`` caps the device memory the resident frames may take (default: the
    device's free memory; unlimited on the CPU) — over it, frames are streamed per batch.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    if not (alpha > 0 and beta > 0):
        raise ValueError(f"alpha and beta must be > 0, got {alpha} and {beta}")
    if not (0 < object_regularisation <= 1 and 0 < probe_regularisation <= 1):
        raise ValueError("object_regularisation and probe_regularisation must be in (0, 1]")
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    be = backends.select(device) if backend is None else backend
    settings = _Settings(alpha, beta, object_regularisation, probe_regularisation, be, memory_budget_bytes)
    cone = lowcount.measure_cone(scan)
    if probe_defocus_m is None:
        trial = epie.binned_trial(lambda s, z, n: _reconstruct(s, n, 1, z, seed, None, settings, None), cone)
        chosen = focus.auto_focus(scan, trial, iterations, cone=cone)
    else:
        chosen = focus.fixed(probe_defocus_m)
    recon = epie.binned_run(
        lambda s, z: _reconstruct(s, iterations, probe_refine_start, z, seed, batch_size, settings, progress),
        scan, chosen.defocus_m, cone,
    )  # fmt: skip
    return replace(recon, focus=chosen)


@dataclass(frozen=True)
class _Settings:
    alpha: float
    beta: float
    object_regularisation: float
    probe_regularisation: float
    backend: backends.Backend
    memory_budget_bytes: int | None


def _reconstruct(
    scan: cxi.ScanData,
    iterations: int,
    probe_refine_start: int,
    defocus: float,
    seed: int,
    batch_size: int | None,
    settings: _Settings,
    progress: Callable[[int, float], None] | None,
) -> epie.Reconstruction:
    be, memory_budget_bytes = settings.backend, settings.memory_budget_bytes
    alpha, beta = settings.alpha, settings.beta
    object_regularisation, probe_regularisation = (
        settings.object_regularisation,
        settings.probe_regularisation,
    )
    n_frames = len(scan.frames)
    batch = default_batch_size(n_frames) if batch_size is None else batch_size
    positions = np.rint(scan.positions_px).astype(np.int64)
    amplitudes = epie._fft_ordered_amplitudes(scan.frames)
    h, w = amplitudes.shape[1:]
    good = None if scan.bad_pixels is None else np.fft.ifftshift(~scan.bad_pixels).astype(np.float32)
    total_counts = max(_counts(amplitudes, good) / (h * w), 1e-30)

    budget = be.free_bytes() if memory_budget_bytes is None else memory_budget_bytes
    streamed = budget is not None and amplitudes.nbytes + _workspace_bytes(batch, h, w, scan.object_shape) > (
        _MEMORY_HEADROOM * budget
    )
    resident = None
    if not streamed:
        try:
            resident = be.to_device(amplitudes)
        except MemoryError:  # CuPy's OutOfMemoryError: the estimate was optimistic; stream instead
            streamed = True
            be.release_cached()
    state = _State(
        be,
        obj=be.xp.ones(scan.object_shape, np.complex64),
        probe=be.to_device(epie.initial_probe(scan, defocus)),
        positions=positions,
        amplitudes=amplitudes if resident is None else resident,
        streamed=streamed,
        good=None if good is None else be.to_device(good),
    )
    rng = np.random.default_rng(seed)
    history: list[float] = []
    peak = be.held_bytes()
    start = time.perf_counter()
    with np.errstate(over="ignore", invalid="ignore"), ThreadPoolExecutor(be.workers) as pool:
        for iteration in range(iterations):
            order = rng.permutation(n_frames)
            refine = iteration >= probe_refine_start
            squared = 0.0
            for first in range(0, n_frames, batch):
                squared = squared + _batch_step(
                    state, order[first : first + batch], refine, alpha, beta,
                    object_regularisation, probe_regularisation, pool,
                )  # fmt: skip
                peak = max(peak, be.held_bytes())
            history.append(float(squared) / total_counts)
            if progress is not None:
                progress(iteration, history[-1])
            if not math.isfinite(history[-1]):
                break
    be.synchronize()
    seconds = time.perf_counter() - start
    illumination = be.xp.zeros(scan.object_shape, np.float32)
    state.add_illumination(illumination, np.arange(n_frames))
    return epie.Reconstruction(
        object=be.to_host(state.obj),
        probe=be.to_host(state.probe),
        fourier_error=history,
        illumination=be.to_host(illumination),
        positions_px=positions,
        params={
            "iterations": iterations,
            "probe_refine_start": probe_refine_start,
            "alpha": alpha,
            "beta": beta,
            "probe_defocus_m": defocus,
            "seed": seed,
            "batch_size": batch,
            "object_regularisation": object_regularisation,
            "probe_regularisation": probe_regularisation,
            "device": be.device,
            "streamed": streamed,
        },
        seconds=seconds,
        device=be.device,
        peak_device_bytes=max(peak, be.held_bytes()),
    )


def _counts(amplitudes: np.ndarray, good: np.ndarray | None) -> float:
    """Σ a² over the usable pixels, frame by frame (no full-size temporary)."""
    return sum(float(np.vdot(a, a if good is None else a * good)) for a in amplitudes)


def _workspace_bytes(batch: int, h: int, w: int, object_shape: tuple[int, int]) -> int:
    """Rough device memory of one batch step besides the frames: a few complex batch-sized arrays."""
    return 6 * batch * h * w * 8 + 4 * object_shape[0] * object_shape[1] * 8


@dataclass(eq=False)
class _Partial:
    """One chunk's sums: object and probe numerators and denominators, Σ‖Δψ‖²."""

    num_obj: Any
    den_obj: Any
    num_probe: Any
    den_probe: Any
    squared: Any = 0.0
    _workspace: _Workspace | None = None

    def workspace(self, xp: Any, frames: int, shape: tuple[int, int]) -> _Workspace:
        """Group-sized buffers, kept between batches (reallocated only when a group grows)."""
        if self._workspace is None or len(self._workspace.ratio) < frames:
            self._workspace = _Workspace(
                xp.empty((frames, *shape), np.complex64),
                xp.empty((frames, *shape), np.complex64),
                xp.empty((frames, *shape), np.float32),
                xp.empty((frames, *shape), np.complex64),
            )
        return self._workspace


@dataclass(frozen=True, eq=False)
class _Workspace:
    patches: Any
    exit_wave: Any
    ratio: Any
    scratch: Any


@dataclass(eq=False)
class _State:
    be: backends.Backend
    obj: Any
    probe: Any
    positions: np.ndarray
    amplitudes: Any
    """On the device, or in host memory when ``streamed``."""
    streamed: bool
    good: Any

    def __post_init__(self) -> None:
        xp = self.be.xp
        h, w = self.probe.shape
        self.partials = [self.new_partial() for _ in range(self.be.workers)]
        self.object_intensity: Any = None
        # int32 halves the index traffic of a GPU batch; complex targets are scattered as 2 floats
        dtype = np.int32 if 2 * self.obj.size < 2**31 else np.int64
        corners = self.positions[:, 0] * self.obj.shape[1] + self.positions[:, 1]
        self.device_positions = xp.asarray(corners.astype(dtype))
        self.offsets = (xp.arange(h)[:, None] * self.obj.shape[1] + xp.arange(w)[None, :]).astype(dtype)

    def new_partial(self) -> _Partial:
        xp = self.be.xp
        return _Partial(
            xp.zeros(self.obj.shape, np.complex64),
            xp.zeros(self.obj.shape, np.float32),
            xp.zeros(self.probe.shape, np.complex64),
            xp.zeros(self.probe.shape, np.float32),
        )

    def indices(self, frames: np.ndarray) -> Any:
        """Flat object indices of the patches of ``frames``: (n, h, w)."""
        return self.device_positions[self.be.xp.asarray(frames)][:, None, None] + self.offsets

    def gather(self, frames: np.ndarray, out: Any, index: Any = None) -> Any:
        """The object patches of ``frames``, copied into ``out`` (one frame on the CPU: a view;
        read-only either way)."""
        h, w = self.probe.shape
        if self.be.indexed:
            return self.be.xp.take(
                self.obj.ravel(), self.indices(frames) if index is None else index, out=out
            )
        if len(frames) == 1:
            y, x = self.positions[frames[0]].tolist()
            return self.obj[None, y : y + h, x : x + w]
        for i, (y, x) in enumerate(self.positions[frames].tolist()):
            out[i] = self.obj[y : y + h, x : x + w]
        return out

    def scatter(self, target: Any, frames: np.ndarray, values: Any, index: Any = None) -> None:
        """``target[patch of frame k] += values[k]`` (``values`` may broadcast over frames)."""
        h, w = self.probe.shape
        if self.be.indexed:
            index = self.indices(frames) if index is None else index
            if target.dtype != np.complex64:
                self.be.add_at(target.ravel(), index, self.be.xp.broadcast_to(values, index.shape))
                return
            # Complex as interleaved float32: scatter-add kernels (cupyx.scatter_add) support all
            # float types, not every complex one.
            flat, index = target.view(np.float32).ravel(), 2 * index
            self.be.add_at(flat, index, self.be.xp.broadcast_to(values.real, index.shape))
            self.be.add_at(flat, index + 1, self.be.xp.broadcast_to(values.imag, index.shape))
            return
        single = values.ndim == 2
        for i, (y, x) in enumerate(self.positions[frames].tolist()):
            target[y : y + h, x : x + w] += values if single else values[i]

    def add_patch_sum(self, target: Any, source: Any, frames: np.ndarray, index: Any = None) -> None:
        """``target += Σ_k source[patch of frame k]`` (``target`` probe-sized)."""
        h, w = self.probe.shape
        if self.be.indexed:
            index = self.indices(frames) if index is None else index
            target += self.be.xp.take(source.ravel(), index).sum(axis=0)
            return
        for y, x in self.positions[frames].tolist():
            target += source[y : y + h, x : x + w]

    def add_illumination(self, target: Any, frames: np.ndarray) -> None:
        """Σ|P|² of ``frames`` on the object grid (the object step's weight, the output's illumination)."""
        self.scatter(target, frames, self.probe.real**2 + self.probe.imag**2)

    def frames_of(self, frames: np.ndarray) -> Any:
        """The amplitudes of ``frames`` on the device (copied in per batch when streamed)."""
        if self.streamed:
            return self.be.to_device(self.amplitudes[frames])
        if not self.be.indexed and len(frames) == 1:
            return self.amplitudes[frames[0]][None]  # a view, no copy
        return self.amplitudes[self.be.xp.asarray(frames)] if self.be.indexed else self.amplitudes[frames]


def _batch_step(
    state: _State,
    frames: np.ndarray,
    refine: bool,
    alpha: float,
    beta: float,
    object_reg: float,
    probe_reg: float,
    pool: ThreadPoolExecutor,
) -> Any:
    """Corrections of one batch from the current object and probe, then one update of each."""
    if refine:  # the probe step's weight Σ|O_k|², gathered from |O|² computed once per batch
        state.object_intensity = state.obj.real**2 + state.obj.imag**2
    chunks = [c for c in np.array_split(frames, state.be.workers) if len(c)]
    partials = state.partials[: len(chunks)]
    if len(chunks) == 1:
        _corrections(state, chunks[0], partials[0], refine)
    else:
        for done in [
            pool.submit(_corrections, state, c, p, refine) for c, p in zip(chunks, partials, strict=True)
        ]:
            done.result()
    total = partials[0]
    for other in partials[1:]:
        total.num_obj += other.num_obj
        total.den_obj += other.den_obj
        total.squared = total.squared + other.squared
        if refine:
            total.num_probe += other.num_probe
            total.den_probe += other.den_probe
    if refine:  # both updates from the same state: the probe step uses the object before its update
        probe_step = _normalised(state.be.xp, total.num_probe, total.den_probe, probe_reg, beta)
    state.obj += _normalised(state.be.xp, total.num_obj, total.den_obj, object_reg, alpha)
    if refine:
        state.probe += probe_step
    return total.squared


def _normalised(xp: Any, numerator: Any, weight: Any, regularisation: float, step: float) -> Any:
    """step · numerator / ((1 - r) weight + r max(weight)), the rPIE denominator over summed weights."""
    floor = xp.maximum(weight.max(), _TINY) * np.float32(regularisation)
    denominator = weight * np.float32(1 - regularisation)
    denominator += floor
    return numerator * (np.float32(step) / denominator)


def _corrections(state: _State, frames: np.ndarray, partial: _Partial, refine: bool) -> None:
    """Sum the corrections of ``frames`` into ``partial`` (zeroed first), a group of frames at a time.

    numpy's error state is per thread: divergence shows in the error history, not as warnings."""
    with np.errstate(over="ignore", invalid="ignore"):
        _sum_corrections(state, frames, partial, refine)


def _sum_corrections(state: _State, frames: np.ndarray, partial: _Partial, refine: bool) -> None:
    be, xp = state.be, state.be.xp
    for array in (partial.num_obj, partial.den_obj, partial.num_probe, partial.den_probe):
        array.fill(0)
    partial.squared = 0.0
    probe = state.probe
    probe_conj = xp.conj(probe)
    frame_bytes = probe.size * np.dtype(np.complex64).itemsize
    group = len(frames) if be.group_bytes is None else max(1, be.group_bytes // frame_bytes)
    ws = partial.workspace(xp, min(group, len(frames)), probe.shape)
    for first in range(0, len(frames), group):
        part = frames[first : first + group]
        n = len(part)
        index = state.indices(part) if be.indexed else None  # once per group, for every gather/scatter
        patches, exit_wave, ratio = state.gather(part, ws.patches[:n], index), ws.exit_wave[:n], ws.ratio[:n]
        xp.multiply(patches, probe, out=exit_wave)
        spectrum = be.fft2(exit_wave)
        xp.abs(spectrum, out=ratio)
        ratio += _TINY  # |Ψ| >= 0: cheaper than a maximum, the same where |Ψ| matters
        xp.divide(state.frames_of(part), ratio, out=ratio)
        ratio -= 1
        if state.good is not None:
            ratio *= state.good
        spectrum *= ratio
        delta = be.ifft2(spectrum)
        flat = delta.ravel()
        partial.squared = partial.squared + xp.vdot(flat, flat).real
        if refine:
            scratch = ws.scratch[:n]  # not exit_wave: the transforms may have reused it for delta
            xp.conj(patches, out=scratch)
            scratch *= delta
            partial.num_probe += scratch[0] if n == 1 else scratch.sum(axis=0)
            state.add_patch_sum(partial.den_probe, state.object_intensity, part, index)
        delta *= probe_conj
        state.scatter(partial.num_obj, part, delta, index)
    state.add_illumination(partial.den_obj, frames)


def main(argv: list[str] | None = None) -> int:
    """The job command: :func:`epie.main`'s arguments, outputs and exit codes, plus the device."""
    parser = epie.cli_parser(
        prog="python -m cosmic_dagster.ptycho.batched",
        description="Mini-batch PIE reconstruction of a COSMIC CXI scan (CPU threads or one GPU).",
    )
    parser.add_argument("--device", choices=backends.DEVICES, default="auto", help="auto: the GPU if usable")
    parser.add_argument(
        "--batch-size", type=epie.positive_int, default=None, help="default: a quarter of the scan"
    )
    parser.add_argument(
        "--workers", type=epie.positive_int, default=None, help="CPU threads (default: all cores)"
    )
    return epie.main(argv, engine=ENGINE, parser=parser, run=_run)


def _run(
    scan: cxi.ScanData, args: argparse.Namespace, progress: Callable[[int, float], None]
) -> epie.Reconstruction:
    backend = backends.select(args.device, workers=args.workers)
    where = "GPU" if backend.device == "gpu" else f"CPU, {backend.workers} thread(s)"
    print(f"{ENGINE}: device {where} (asked: {args.device})", flush=True)
    return reconstruct(
        scan,
        args.iterations,
        probe_refine_start=args.probe_refine_start,
        alpha=args.alpha,
        beta=args.beta,
        probe_defocus_m=None if args.probe_defocus_um is None else args.probe_defocus_um * 1e-6,
        seed=args.seed,
        batch_size=args.batch_size,
        backend=backend,
        progress=progress,
    )


if __name__ == "__main__":
    sys.exit(main())
