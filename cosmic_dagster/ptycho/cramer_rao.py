"""The least object error a scan's photons allow an unbiased engine (Cramér-Rao), from its truth.

Why: the robustness benchmark counts success over the scans a ptychography experiment could solve,
so it must tell a scan whose photons cannot give the image to within the success threshold from one
an engine fails. Both bounds below assume the engine is told the probe and the positions (knowing
more only lowers a bound).

- :func:`pixelwise_bound` treats each object pixel alone: cheap, and a lower bound of the other. It
  was the benchmark's photon rule until the whole-scan bound replaced it; the benchmark still
  reports it, to compare with earlier rounds.
- :func:`whole_scan_bound` inverts the whole Fisher information: object pixels are coupled through
  the frames, and scattering that only the phase of a shared far field reveals (few frames, light
  mostly outside the bright field, counts under the air scatter) is less known than its photons
  say. The counts, the diffuse background, the bad pixels and the read noise of dark-subtracted
  frames (:func:`rate_information`) are modelled. It is the benchmark's photon rule. Like any
  Cramér-Rao bound it binds unbiased engines only (ePIE, which shrinks what the data barely tell
  towards its start, beats it on some smooth samples, as it beats the pixelwise one): a rule of
  what the data determine, as the geometric rules are, not a forecast of one engine's outcome
  (docs/reconstruction-quality.md, "The whole-scan noise limit as the photon rule" and "Read noise
  in the likelihood finish and in the photon rule").
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy import special

from cosmic_dagster.ptycho.quality import DEFAULT_LIT_FRACTION, illumination, lit_mask

#: Object pixels with less than this fraction of the peak exposure are held known: the bound stays
#: a lower bound, and the Fisher information stays well conditioned.
SUPPORT_FRACTION = 1e-3
#: The conjugate-gradient solve stops once five more iterations raise the bound by less than this
#: (relative); each iteration raises it, so stopping early only lowers it.
TOLERANCE = 1e-3
MAX_ITERATIONS = 300
#: Above this rate (photons per pixel) a count with read noise is Gaussian enough that the
#: information it holds about its rate is 1 / (λ + s²) (within 0.1 % of the exact sum there).
_GAUSSIAN_RATE = 30.0


@dataclass(frozen=True)
class _LitRegion:
    """Where a bound is scored: the scan's exposure (photons per object pixel), its lit part and
    the truth's power there."""

    exposure: np.ndarray
    lit: np.ndarray
    signal: float

    @classmethod
    def of(
        cls, truth: np.ndarray, probe: np.ndarray, positions_px: np.ndarray, lit_fraction: float
    ) -> _LitRegion | None:
        """None where nothing is lit or the lit truth is zero: no error can be scored there."""
        exposure = illumination(probe, positions_px, truth.shape).astype(np.float64)
        lit = lit_mask(exposure, lit_fraction)
        signal = float(np.sum(np.abs(truth[lit]) ** 2))
        if signal == 0 or not np.all(exposure[lit] > 0):
            return None
        return cls(exposure, lit, signal)


def pixelwise_bound(
    truth: np.ndarray,
    probe: np.ndarray,
    positions_px: np.ndarray,
    *,
    lit_fraction: float = DEFAULT_LIT_FRACTION,
) -> float:
    """The bound with each pixel alone: one exposure gives pixel r a Fisher information of 4|P(r)|²
    (``probe`` in photons per object pixel) shared between the two quadratures of O(r), so
    E|δO(r)|² ≥ 1/N(r), N(r) the photons that fell on r over the scan; scored as
    :func:`~cosmic_dagster.ptycho.quality.object_error` scores (over the lit region, relative to the
    truth)."""
    region = _LitRegion.of(truth, probe, positions_px, lit_fraction)
    if region is None:
        return math.inf
    return math.sqrt(float(np.sum(1 / region.exposure[region.lit])) / region.signal)


def rate_information(rate: np.ndarray, read_noise: float = 0.0) -> np.ndarray:
    """The Fisher information one pixel's count holds about its rate λ (photons), elementwise:
    1/λ from a photon counter. Gaussian read noise of rms ``read_noise`` (what dark subtraction
    leaves) blurs a photon into none where it is not well under a photon: a dim pixel then tells
    less (at 0.4 photon rms and λ = 0.01, 0.3/λ), and a bright one 1 / (λ + s²)."""
    sigma = round(float(read_noise), 2)
    if sigma == 0:
        return 1 / np.maximum(rate, 1e-12)
    grid, shares = _information_shares(sigma)
    lam = np.maximum(rate, grid[0])
    dim = np.interp(np.log(lam), np.log(grid), shares) / lam
    return np.where(lam < _GAUSSIAN_RATE, dim, 1 / (lam + sigma**2))


@functools.cache
def _information_shares(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """λ·I(λ) over a grid of λ up to :data:`_GAUSSIAN_RATE`, for counts N + ε (N ~ Poisson(λ),
    ε ~ N(0, s²), s = ``sigma``): I = ∫ (∂p/∂λ)² / p dy, p(y) = Σ_n Pois(n; λ) φ(y - n), φ the
    noise's density, summed on a grid of y."""
    grid = np.geomspace(1e-8, _GAUSSIAN_RATE, 160)
    photons = np.arange(int(_GAUSSIAN_RATE + 8 * math.sqrt(_GAUSSIAN_RATE) + 12), dtype=np.float64)
    step = min(sigma / 6, 0.05)
    y = np.arange(-8 * sigma, photons[-1] + 8 * sigma, step)
    kernel = np.exp(-0.5 * ((y[None, :] - photons[:, None]) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))
    shares = np.empty(len(grid))
    for i, lam in enumerate(grid):
        pmf = np.exp(photons * math.log(lam) - lam - special.gammaln(photons + 1))
        density, slope = pmf @ kernel, (np.concatenate([[0.0], pmf[:-1]]) - pmf) @ kernel
        held = density > 1e-300
        shares[i] = lam * float(np.sum(slope[held] ** 2 / density[held])) * step
    return grid, shares


class FisherInformation:
    """The Fisher information of a scan's frames about its object, as an operator.

    A frame's expected counts are λ = |Ψ|² + b with Ψ = F[P · O] (unitary FFT, the file's sign);
    a change δO moves them by 2 Re(Ψ* F[P · δO]), so the information is
    G δO = Σ_frames P* F⁻¹[4 w I(λ) Ψ Re(Ψ* F[P · δO])] with w 0 on bad pixels and I(λ) what a
    count holds about its rate (:func:`rate_information`: 1/λ without ``read_noise``): a
    real-linear, self-adjoint map for the inner product Re⟨u, v⟩ (the two quadratures of each
    pixel).
    """

    def __init__(
        self,
        truth: np.ndarray,
        probe: np.ndarray,
        positions_px: np.ndarray,
        *,
        background: np.ndarray | None = None,
        bad_pixels: np.ndarray | None = None,
        fft_sign: int = 1,
        read_noise: float = 0.0,
    ) -> None:
        self.truth = truth.astype(np.complex128)
        self.probe = probe.astype(np.complex128)
        self.corners = np.rint(np.asarray(positions_px)).astype(np.int64)
        self._forward, self._inverse = (
            (np.fft.fft2, np.fft.ifft2) if fft_sign > 0 else (np.fft.ifft2, np.fft.fft2)
        )
        far = np.stack([self._transform(self._patch(self.truth, y, x)) for y, x in self.corners])
        counts = np.abs(far) ** 2
        # Detector arrays are stored DC-centred; the unshifted transform puts DC in the corner.
        if background is not None:
            counts += np.fft.ifftshift(background)
        weight = 4 * rate_information(counts, read_noise)
        if bad_pixels is not None:
            weight *= ~np.fft.ifftshift(bad_pixels)
        self._weighted = weight * far
        self._conjugate = np.conj(far)

    def _patch(self, obj: np.ndarray, y: int, x: int) -> np.ndarray:
        n, m = self.probe.shape
        return self.probe * obj[y : y + n, x : x + m]

    def _transform(self, wave: np.ndarray) -> np.ndarray:
        return self._forward(wave, norm="ortho")

    def __call__(self, change: np.ndarray) -> np.ndarray:
        n, m = self.probe.shape
        out = np.zeros_like(change)
        for k, (y, x) in enumerate(self.corners):
            moved = np.real(self._conjugate[k] * self._transform(self._patch(change, y, x)))
            out[y : y + n, x : x + m] += np.conj(self.probe) * self._inverse(
                self._weighted[k] * moved, norm="ortho"
            )
        return out


def whole_scan_bound(
    information: FisherInformation,
    *,
    lit_fraction: float = DEFAULT_LIT_FRACTION,
    probes: int = 1,
    seed: int = 0,
) -> float:
    """√(tr G⁻¹ over the lit region / Σ|O|² there) for the scan ``information`` describes: the
    whole-scan bound, scored like :func:`pixelwise_bound`.

    The trace comes from Hutchinson's estimate (``probes`` random ±1 vectors z, zᵀG⁻¹z each), each
    solve by conjugate gradients preconditioned with the pixelwise information. The object's global
    phase, which no count can tell, is projected out (registration removes it too).
    """
    truth = information.truth
    region = _LitRegion.of(truth, information.probe, information.corners, lit_fraction)
    if region is None:
        return math.inf
    exposure, lit = region.exposure, region.lit
    support = exposure >= SUPPORT_FRACTION * exposure.max()
    phase = 1j * truth * support
    phase /= np.linalg.norm(phase)

    def without_phase(v: np.ndarray) -> np.ndarray:
        return v - phase * np.real(np.vdot(phase, v))

    def apply(v: np.ndarray) -> np.ndarray:
        return without_phase(information(without_phase(v)) * support)

    # The pixelwise information per quadrature, 2·exposure (see :func:`pixelwise_bound`).
    inverse_pixelwise = support / (2 * np.maximum(exposure, np.finfo(np.float64).tiny))

    def precondition(v: np.ndarray) -> np.ndarray:
        return without_phase(inverse_pixelwise * v)

    rng = np.random.default_rng(seed)
    traces = []
    for _ in range(probes):
        z = without_phase(
            (rng.choice([-1.0, 1.0], truth.shape) + 1j * rng.choice([-1.0, 1.0], truth.shape)) * lit
        )
        traces.append(_quadratic_form(apply, precondition, z))
    return math.sqrt(float(np.mean(traces)) / region.signal)


def _quadratic_form(
    apply: Callable[[np.ndarray], np.ndarray], precondition: Callable[[np.ndarray], np.ndarray], z: np.ndarray
) -> float:
    """zᵀA⁻¹z by preconditioned conjugate gradients from 0: each iteration raises the estimate
    towards the true value, so a truncated solve is a lower bound."""
    x = np.zeros_like(z)
    r = z.copy()
    s = precondition(r)
    p = s.copy()
    rs = float(np.real(np.vdot(r, s)))
    estimate = 0.0
    for iteration in range(1, MAX_ITERATIONS + 1):
        ap = apply(p)
        alpha = rs / float(np.real(np.vdot(p, ap)))
        x += alpha * p
        r -= alpha * ap
        s = precondition(r)
        rs, previous = float(np.real(np.vdot(r, s))), rs
        p = s + (rs / previous) * p
        if iteration % 5 == 0:
            estimate, before = float(np.real(np.vdot(z, x))), estimate
            if estimate - before < TOLERANCE * estimate:
                break
    return float(np.real(np.vdot(z, x)))
