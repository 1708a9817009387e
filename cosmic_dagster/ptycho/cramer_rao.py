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
  say. The counts, the diffuse background and the bad pixels are modelled; the read noise is not.
  It is the benchmark's photon rule. Like any Cramér-Rao bound it binds unbiased engines only (ePIE,
  which shrinks what the data barely tell towards its start, beats it on some smooth samples, as it
  beats the pixelwise one): a rule of what the data determine, as the geometric rules are, not a
  forecast of one engine's outcome (docs/reconstruction-quality.md, "The whole-scan noise limit as
  the photon rule").
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from cosmic_dagster.ptycho.quality import DEFAULT_LIT_FRACTION, illumination, lit_mask

#: Object pixels with less than this fraction of the peak exposure are held known: the bound stays
#: a lower bound, and the Fisher information stays well conditioned.
SUPPORT_FRACTION = 1e-3
#: The conjugate-gradient solve stops once five more iterations raise the bound by less than this
#: (relative); each iteration raises it, so stopping early only lowers it.
TOLERANCE = 1e-3
MAX_ITERATIONS = 300


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


class FisherInformation:
    """The Poisson Fisher information of a scan's frames about its object, as an operator.

    A frame's expected counts are λ = |Ψ|² + b with Ψ = F[P · O] (unitary FFT, the file's sign);
    a change δO moves them by 2 Re(Ψ* F[P · δO]), so the information is
    G δO = Σ_frames P* F⁻¹[4 w Ψ Re(Ψ* F[P · δO]) / λ] with w 0 on bad pixels: a real-linear,
    self-adjoint map for the inner product Re⟨u, v⟩ (the two quadratures of each pixel).
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
        weight = 4 / np.maximum(counts, 1e-12)
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
