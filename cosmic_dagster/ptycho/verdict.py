"""Is a reconstruction right? A verdict from the data alone (no ground truth), for any engine.

The main signal is how well the final model explains the measured counts: its Fourier error
``Σ(|Ψ| - √I)² / ΣI`` (usable pixels of all frames) divided by the error that a *perfect* model
would still show because photon counts are Poisson-distributed (the noise floor, ``Σ g(λ) / ΣI``
with ``g(λ) = E[(√N - √λ)²]``, ``N ~ Poisson(λ)``, λ the model's intensity). A right
reconstruction sits near 1; a wrong one (wrong probe defocus, noise, divergence) far above,
however much its error fell. Physical sanity signals catch what a good fit alone would not. The
limits and how they were calibrated: ``docs/reconstruction-quality.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import fft, special

#: Above this many counts per pixel g(λ) is 1/4 - 5/(64 λ) to better than 1e-4.
_ASYMPTOTIC_COUNTS = 200.0


@dataclass(frozen=True)
class Verdict:
    """``signal`` names the failing signal ("" when ok); ``reason`` says it in an operator's words."""

    ok: bool
    reason: str
    signal: str = ""


@dataclass(frozen=True)
class Limits:
    """Thresholds of :func:`judge` (calibrated on ``benchmarks/recon_robustness.py``)."""

    max_error_to_floor: float = 3.0
    """The final model's Fourier error may be at most this many times the noise floor."""
    max_rise: float = 1.5
    """The final Fourier error may be at most this many times the best of the history."""
    intensity_balance: tuple[float, float] = (0.8, 1.25)
    """Model counts / measured counts (over usable pixels) must lie in this range."""
    max_amplitude_spread: float = 8.0
    """99.9th percentile over median of the object's amplitude in the lit region (a transmission
    has no hot spots; a diverging or noise-fitting reconstruction does)."""


LIMITS = Limits()


@dataclass(frozen=True)
class Fit:
    """How the final model (object, probe, positions) explains the measured frames."""

    fourier_error: float
    noise_floor: float
    intensity_balance: float
    """Σ model intensity / Σ measured intensity over usable pixels."""
    twin: bool = False
    """True if the model matches the data only mirrored (an engine with the opposite FFT sign)."""

    @property
    def error_to_floor(self) -> float:
        return self.fourier_error / self.noise_floor if self.noise_floor > 0 else math.inf


@dataclass(frozen=True)
class Signals:
    """Everything :func:`judge` looks at; None where an engine's output does not provide it."""

    fourier_error: Sequence[float]
    """The engine's own error history (any normalisation: only its shape is used)."""
    finite: bool
    fit: Fit | None = None
    amplitude_spread: float | None = None

    def to_summary(self) -> dict[str, object]:
        """The figures an operator sees next to the verdict (JSON-able)."""
        out: dict[str, object] = {"finite": self.finite}
        if self.fit is not None:
            out.update(asdict(self.fit), error_to_noise_floor=self.fit.error_to_floor)
        if self.amplitude_spread is not None:
            out["amplitude_spread"] = self.amplitude_spread
        return out


def poisson_sqrt_variance(counts: np.ndarray) -> np.ndarray:
    """g(λ) = E[(√N - √λ)²] for N ~ Poisson(λ), elementwise (0 at λ = 0, ~0.45 at 1, 1/4 at ∞)."""
    grid, values = _g_table()
    lam = np.maximum(np.asarray(counts, np.float64), 0)
    small = np.interp(np.log(np.maximum(lam, grid[0])), np.log(grid), values) * np.minimum(lam / grid[0], 1)
    large = 0.25 - 5 / (64 * np.maximum(lam, _ASYMPTOTIC_COUNTS))
    return np.where(lam < _ASYMPTOTIC_COUNTS, small, large)


@functools.cache
def _g_table() -> tuple[np.ndarray, np.ndarray]:
    grid = np.geomspace(1e-6, _ASYMPTOTIC_COUNTS, 240)
    n = np.arange(0, int(_ASYMPTOTIC_COUNTS * 3) + 100)
    log_pmf = n[None, :] * np.log(grid[:, None]) - grid[:, None] - special.gammaln(n + 1)[None, :]
    values = np.sum(np.exp(log_pmf) * (np.sqrt(n)[None, :] - np.sqrt(grid)[:, None]) ** 2, axis=1)
    return grid, values


def model_fit(
    frames: np.ndarray,
    obj: np.ndarray,
    probe: np.ndarray,
    positions_px: np.ndarray,
    bad_pixels: np.ndarray | None = None,
) -> Fit:
    """One forward pass of the final model against the frames (DC-centred, as COSMIC stores them).

    Far field = orthonormal FFT of probe x object patch at each (row, column) top-left corner, the
    convention of :mod:`cosmic_dagster.ptycho.optics`; a model that fits only the mirrored patterns
    (the conjugate convention of another engine) is scored mirrored. Negative counts count as 0.
    """
    h, w = probe.shape
    positions = np.rint(np.asarray(positions_px)).astype(np.int64)
    good = None if bad_pixels is None else np.fft.ifftshift(~bad_pixels).astype(np.float64)
    probe = probe.astype(np.complex64)
    sums = np.zeros(3)  # Σ(|Ψ|-a)², Σ(|Ψ(-q)|-a)², Σg(λ)
    measured = modelled = 0.0
    buffer = np.empty((h, w), np.complex64)
    for frame, (y, x) in zip(frames, positions.tolist(), strict=True):
        np.multiply(probe, obj[y : y + h, x : x + w], out=buffer)
        model = np.abs(fft.fft2(buffer, norm="ortho", workers=1)).astype(np.float64)
        mirrored = np.roll(model[::-1, ::-1], 1, axis=(0, 1))
        counts = np.maximum(np.fft.ifftshift(frame).astype(np.float64), 0)
        amplitude = np.sqrt(counts)
        weight = 1.0 if good is None else good
        sums[0] += float(np.sum(weight * (model - amplitude) ** 2))
        sums[1] += float(np.sum(weight * (mirrored - amplitude) ** 2))
        sums[2] += float(np.sum(weight * poisson_sqrt_variance(model**2)))
        measured += float(np.sum(weight * counts))
        modelled += float(np.sum(weight * model**2))
    total = max(measured, 1e-30)
    twin = sums[1] < sums[0]
    return Fit(
        fourier_error=float(min(sums[0], sums[1]) / total),
        noise_floor=float(sums[2] / total),
        intensity_balance=modelled / total,
        twin=bool(twin),
    )


def amplitude_spread(obj: np.ndarray, lit: np.ndarray) -> float:
    """99.9th percentile over median of |object| where it was well lit (∞ if the median is 0)."""
    amplitude = np.abs(obj[lit])
    if amplitude.size == 0:
        return math.inf
    median = float(np.median(amplitude))
    return float(np.percentile(amplitude, 99.9)) / median if median > 0 else math.inf


def judge(signals: Signals, limits: Limits = LIMITS) -> Verdict:
    """The first failing signal, in order of how much it says: NaN, divergence, fit, physics."""
    history = [float(e) for e in signals.fourier_error]
    if not signals.finite:
        return Verdict(False, "the reconstructed object or probe contains NaN or infinity", "finite")
    bad = [i for i, e in enumerate(history, 1) if not math.isfinite(e)]
    if bad:
        return Verdict(False, f"diverged: non-finite Fourier error from iteration {bad[0]}", "divergence")
    if len(history) < 2:
        return Verdict(False, f"{len(history)} iteration(s): too few to judge progress", "iterations")
    best_at = min(range(len(history)), key=history.__getitem__)
    best, final = history[best_at], history[-1]
    if final > limits.max_rise * best:
        return Verdict(
            False,
            f"diverged: final Fourier error {final:.3g} is {final / best:.1f}x its best "
            f"({best:.3g} at iteration {best_at + 1})",
            "divergence",
        )
    fit = signals.fit
    if fit is not None:
        ratio = fit.error_to_floor
        if not ratio <= limits.max_error_to_floor:
            return Verdict(
                False,
                f"the model does not explain the data: its Fourier error {fit.fourier_error:.3g} is "
                f"{ratio:.1f}x what photon noise alone explains ({fit.noise_floor:.3g}; at most "
                f"{limits.max_error_to_floor:g}x passes); wrong probe defocus, positions or geometry?",
                "error_to_noise_floor",
            )
        low, high = limits.intensity_balance
        if not low <= fit.intensity_balance <= high:
            return Verdict(
                False,
                f"the model puts {fit.intensity_balance:.2f}x the measured photons on the detector "
                f"(allowed {low:g}..{high:g}): probe or object scale is off",
                "intensity_balance",
            )
    spread = signals.amplitude_spread
    if spread is not None and not spread <= limits.max_amplitude_spread:
        return Verdict(
            False,
            f"the object has hot spots: its brightest lit pixels are {spread:.1f}x the median "
            f"amplitude (a transmission allows at most {limits.max_amplitude_spread:g}x)",
            "amplitude_spread",
        )
    drop = history[0] / final if final > 0 else math.inf
    fit_text = "" if fit is None else f", {fit.error_to_floor:.2f}x the photon-noise floor"
    return Verdict(True, f"Fourier error fell {drop:.1f}x to {final:.3g}{fit_text}")
