"""How good is a reconstruction: Fourier-error history, object error against a known truth, a verdict.

Reconstructions are only defined up to a global complex factor, a shift and the twin (conjugate)
image, and conventions differ between engines; comparing raw arrays would report those as errors,
so :func:`object_error` registers first and scores only the well-lit region.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

#: Fraction of the peak exposure above which the object counts as well lit.
DEFAULT_LIT_FRACTION = 0.5


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


@dataclass(frozen=True)
class Registration:
    """The best match of a reconstruction to the truth: ``truth ≈ factor · variant(recon)(x + shift)``."""

    error: float
    shift: tuple[float, float]
    factor: complex
    conjugated: bool
    rotated: bool


@dataclass(frozen=True)
class OutputQuality:
    """Quality figures of an engine output file (what the asset check reports)."""

    finite: bool
    iterations: int
    fourier_error_first: float
    fourier_error_final: float
    fourier_error_drop: float
    object_error: float | None
    verdict: Verdict


def lit_mask(illumination: np.ndarray, lit_fraction: float = DEFAULT_LIT_FRACTION) -> np.ndarray:
    """Where the summed probe intensity reaches ``lit_fraction`` of its peak."""
    return illumination >= lit_fraction * float(np.max(illumination))


def register(
    recon: np.ndarray, truth: np.ndarray, mask: np.ndarray | None = None, *, subpixel: bool = True
) -> Registration:
    """Align ``recon`` to ``truth`` over ``mask``: twin variants, integer and sub-pixel shift, factor.

    The error is ``‖mask·(truth - factor·aligned)‖ / ‖mask·truth‖`` minimised over all of these.
    """
    if recon.shape != truth.shape or recon.ndim != 2:
        raise ValueError(f"recon {recon.shape} and truth {truth.shape} must be 2-D arrays of the same shape")
    weight = np.ones(truth.shape) if mask is None else mask.astype(np.float64)
    if not weight.any():
        raise ValueError("the mask selects no pixel")
    if not (np.isfinite(recon).all() and np.isfinite(truth).all()):
        return Registration(math.inf, (0.0, 0.0), complex(math.nan), False, False)
    truth = truth.astype(np.complex128)
    best: tuple[float, tuple[int, int], bool, bool] | None = None
    for conjugated in (False, True):
        for rotated in (False, True):
            variant = _variant(recon, conjugated, rotated)
            score, shift = _best_integer_shift(variant, truth, weight)
            if best is None or score > best[0]:
                best = (score, shift, conjugated, rotated)
    assert best is not None
    _, shift, conjugated, rotated = best
    variant = _variant(recon, conjugated, rotated)
    spectrum = np.fft.fft2(variant)
    start = (float(shift[0]), float(shift[1]))
    if subpixel:
        for step in (0.25, 0.05):
            start = _refine(spectrum, truth, weight, start, step)
    error, factor = _error_at(spectrum, truth, weight, start)
    return Registration(error, start, factor, conjugated, rotated)


def object_error(
    recon: np.ndarray,
    truth: np.ndarray,
    *,
    illumination: np.ndarray | None = None,
    lit_fraction: float = DEFAULT_LIT_FRACTION,
    subpixel: bool = True,
) -> float:
    """Normalised complex L2 error after registration (see :func:`register`), over the lit region.

    Without ``illumination`` (summed probe intensity on the object grid) the whole array counts.
    """
    mask = None if illumination is None else lit_mask(illumination, lit_fraction)
    return register(recon, truth, mask, subpixel=subpixel).error


def verdict(
    fourier_error_history: Sequence[float],
    *,
    min_drop: float = 2.0,
    max_rise: float = 1.5,
) -> Verdict:
    """Judge an error history: non-finite or growing (> ``max_rise`` x its best) is divergence;
    a fall of less than ``min_drop`` x from the first iteration is no progress."""
    history = [float(e) for e in fourier_error_history]
    bad = [i for i, e in enumerate(history, 1) if not math.isfinite(e)]
    if bad:
        return Verdict(False, f"diverged: non-finite Fourier error from iteration {bad[0]}")
    if len(history) < 2:
        return Verdict(False, f"{len(history)} iteration(s): too few to judge progress")
    best_at = min(range(len(history)), key=history.__getitem__)
    first, best, final = history[0], history[best_at], history[-1]
    if final > max_rise * best:
        return Verdict(
            False,
            f"diverged: final Fourier error {final:.3g} is {final / best:.1f}x its best "
            f"({best:.3g} at iteration {best_at + 1})",
        )
    drop = first / final if final > 0 else math.inf
    if drop < min_drop:
        return Verdict(
            False, f"no progress: Fourier error fell only {drop:.2f}x ({first:.3g} -> {final:.3g})"
        )
    return Verdict(
        True, f"Fourier error fell {drop:.1f}x ({first:.3g} -> {final:.3g}) in {len(history)} iterations"
    )


def assess_output(
    output_path: str | os.PathLike[str],
    *,
    truth: np.ndarray | None = None,
    lit_fraction: float = DEFAULT_LIT_FRACTION,
    min_drop: float = 2.0,
) -> OutputQuality:
    """Re-read an engine output file and compute its quality (object error only with ``truth``)."""
    path = Path(output_path)
    with h5py.File(path, "r") as f:
        obj = f["object"][()]
        probe = f["probe"][()]
        history = f["fourier_error"][()].astype(float).tolist()
        illumination = f["illumination"][()]
    finite = bool(np.isfinite(obj).all() and np.isfinite(probe).all())
    first = history[0] if history else math.nan
    final = history[-1] if history else math.nan
    error = None
    if truth is not None and finite:
        error = object_error(obj, truth, illumination=illumination, lit_fraction=lit_fraction)
    judged = verdict(history, min_drop=min_drop)
    if not finite:
        judged = Verdict(False, "the reconstructed object or probe contains NaN or infinity")
    return OutputQuality(
        finite=finite,
        iterations=len(history),
        fourier_error_first=first,
        fourier_error_final=final,
        fourier_error_drop=first / final if final else math.inf,
        object_error=error,
        verdict=judged,
    )


def _variant(recon: np.ndarray, conjugated: bool, rotated: bool) -> np.ndarray:
    out = np.conj(recon) if conjugated else recon
    return (out[::-1, ::-1] if rotated else out).astype(np.complex128)


def _best_integer_shift(
    recon: np.ndarray, truth: np.ndarray, weight: np.ndarray
) -> tuple[float, tuple[int, int]]:
    """Maximise |Σ w t* r(x+s)|² / Σ w |r(x+s)|² over all circular integer shifts s (by FFT)."""
    cross = np.fft.ifft2(np.conj(np.fft.fft2(weight * truth)) * np.fft.fft2(recon))
    energy = np.fft.ifft2(np.conj(np.fft.fft2(weight)) * np.fft.fft2(np.abs(recon) ** 2)).real
    score = np.abs(cross) ** 2 / np.maximum(energy, 1e-12 * energy.max())
    iy, ix = np.unravel_index(int(np.argmax(score)), score.shape)
    h, w = score.shape
    return float(score[iy, ix]), (int(iy) - h * (iy > h // 2), int(ix) - w * (ix > w // 2))


def _shifted(spectrum: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """r(x + shift) by a Fourier phase ramp."""
    ky = np.fft.fftfreq(spectrum.shape[0])[:, None]
    kx = np.fft.fftfreq(spectrum.shape[1])[None, :]
    return np.fft.ifft2(spectrum * np.exp(2j * np.pi * (ky * shift[0] + kx * shift[1])))


def _error_at(
    spectrum: np.ndarray, truth: np.ndarray, weight: np.ndarray, shift: tuple[float, float]
) -> tuple[float, complex]:
    aligned = _shifted(spectrum, shift)
    factor = np.vdot(weight * aligned, truth) / max(np.vdot(weight * aligned, aligned).real, 1e-30)
    residual = np.sqrt(np.sum(weight * np.abs(truth - factor * aligned) ** 2))
    return float(residual / np.sqrt(np.sum(weight * np.abs(truth) ** 2))), complex(factor)


def _refine(
    spectrum: np.ndarray, truth: np.ndarray, weight: np.ndarray, centre: tuple[float, float], step: float
) -> tuple[float, float]:
    candidates = [(centre[0] + i * step, centre[1] + j * step) for i in range(-3, 4) for j in range(-3, 4)]
    return min(candidates, key=lambda s: _error_at(spectrum, truth, weight, s)[0])
