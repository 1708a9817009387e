"""How good is a reconstruction: the ground-truth-free verdict on an engine's result, and the
object error against a known truth (simulations).

Reconstructions are only defined up to a global complex factor, a shift and the twin (conjugate)
image, and conventions differ between engines; comparing raw arrays would report those as errors,
so :func:`object_error` registers first and scores only the well-lit region.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cosmic_dagster.ptycho import cxi, likelihood, verdict
from cosmic_dagster.ptycho.verdict import Signals, Verdict

#: Fraction of the peak exposure above which the object counts as well lit.
DEFAULT_LIT_FRACTION = 0.5
#: Below this fraction of the peak exposure a reconstruction still holds its starting guess, not an
#: image: registration must not shift such pixels onto the lit region (where the truth is blank, an
#: untouched uniform start would match it exactly).
RECONSTRUCTED_FRACTION = 0.01


@dataclass(frozen=True)
class Assessment:
    """The signals measured on a result and the verdict on them."""

    signals: Signals
    verdict: Verdict


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


def illumination(probe: np.ndarray, positions_px: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The summed probe intensity on the object grid (``positions_px``: frames' top-left corners)."""
    h, w = probe.shape
    intensity = (np.abs(probe) ** 2).astype(np.float32)
    total = np.zeros(shape, np.float32)
    for y, x in np.rint(np.asarray(positions_px)).astype(np.int64).tolist():
        total[y : y + h, x : x + w] += intensity
    return total


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
    true_illumination: np.ndarray | None = None,
) -> float:
    """Normalised complex L2 error after registration (see :func:`register`), over the lit region.

    Without ``illumination`` (the reconstruction's summed probe intensity on the object grid) the
    whole array counts. With it, the reconstruction counts as zero where it was not reconstructed
    (:data:`RECONSTRUCTED_FRACTION`), so no shift can score its untouched start, and the region
    scored is where it is lit, or where ``true_illumination`` (the true probe's, in a simulation)
    is: that is the region the scan really lit, which a wrong probe cannot shrink to its best pixels.
    """
    if illumination is None:
        return register(recon, truth, subpixel=subpixel).error
    reconstructed = np.where(lit_mask(illumination, RECONSTRUCTED_FRACTION), recon, 0)
    scored = lit_mask(illumination if true_illumination is None else true_illumination, lit_fraction)
    return register(reconstructed, truth, scored, subpixel=subpixel).error


def assess(
    scan: cxi.ScanData,
    obj: np.ndarray,
    probe: np.ndarray,
    positions_px: np.ndarray,
    fourier_error: Sequence[float],
    illumination: np.ndarray,
    limits: verdict.Limits = verdict.LIMITS,
    focus_contrast: float | None = None,
    failed_runs: int = 0,
    binning: int = 1,
    rates: bool = False,
) -> Assessment:
    """Measure every signal of :func:`verdict.judge` on an engine's result (any engine: object and
    probe on the scan's object grid, frames' top-left corners) and judge it, without ground truth;
    ``focus_contrast`` is the auto-focus's, where it chose the defocus; ``failed_runs`` the runs
    of this scan the verdict failed before (a pass after them is doubtful); ``binning`` the
    detector binning the engine fitted; ``rates``: its object was finished by the likelihood
    (:func:`verdict.model_fit`)."""
    finite = bool(np.isfinite(obj).all() and np.isfinite(probe).all())
    read_noise = verdict.read_noise_estimate(scan.frames)
    if not finite:
        signals = Signals(list(fourier_error), finite=False)
    else:
        shape = verdict.probe_shape(probe, scan.object_pixel_size_m[::-1], scan.wavelength_m)
        coverage, dose = verdict.coverage_and_dose(
            scan.frames, probe, positions_px, scan.object_shape, scan.bad_pixels
        )
        signals = Signals(
            list(fourier_error),
            finite=True,
            coverage=coverage,
            dose=dose,
            beam_px=shape.beam_px,
            window_px=min(probe.shape[-2:]),
            fit=verdict.model_fit(
                scan.frames, obj, probe, positions_px, scan.bad_pixels, read_noise, binning, rates
            ),
            amplitude_spread=verdict.amplitude_spread(obj, lit_mask(illumination)),
            probe_coherence=shape.coherence,
            focus_contrast=focus_contrast,
            failed_runs=failed_runs,
        )
    return Assessment(signals, verdict.judge(signals, limits))


def assess_output(
    output_path: str | os.PathLike[str],
    *,
    truth: np.ndarray | None = None,
    lit_fraction: float = DEFAULT_LIT_FRACTION,
    scan: cxi.ScanData | None = None,
) -> OutputQuality:
    """Re-read an engine output file and compute its quality (object error only with ``truth``;
    the full verdict with the ``scan`` it came from, otherwise the error history's alone)."""
    path = Path(output_path)
    with h5py.File(path, "r") as f:
        obj = f["object"][()]
        probe = f["probe"][()]
        history = f["fourier_error"][()].astype(float).tolist()
        illumination = f["illumination"][()]
        positions = f["positions_px"][()]
        parameters = json.loads(f.attrs.get("parameters", "{}"))
    binning = int(parameters.get("detector_binning", 1))
    finite = bool(np.isfinite(obj).all() and np.isfinite(probe).all())
    first = history[0] if history else math.nan
    final = history[-1] if history else math.nan
    error = None
    if truth is not None and finite:
        error = object_error(obj, truth, illumination=illumination, lit_fraction=lit_fraction)
    if scan is not None:
        judged = assess(
            scan,
            obj,
            probe,
            positions,
            history,
            illumination,
            binning=binning,
            rates=likelihood.finished(parameters),
        ).verdict
    else:
        judged = verdict.judge(Signals(history, finite))
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
