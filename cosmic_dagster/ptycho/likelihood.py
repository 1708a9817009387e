"""A Poisson-likelihood finish for the object and the probe: what ePIE's amplitude fit leaves out.

ePIE minimises Σ(|Ψ| - √N)², whose minimum at about a photon per pixel or less is E[√N] ≈ λ, not
√λ: it shrinks the dark field, which carries the fine detail. The Poisson negative log-likelihood
Σ λ - N log λ (λ = |Ψ|², the model's rate) has no such bias. Dark-subtracted frames also carry
read noise of rms s that a photon counter would not (:func:`verdict.read_noise_estimate`). Up to
:data:`COUNTING_NOISE` a count is a photon or none: counts under :data:`ZERO_BELOW` are read as
none, and the model's rate is floored at :data:`RATE_FLOOR` so that a stray count cannot pull a
dark pixel to infinite cost. Binned pixels sum the noise of several: beyond it N + s² is read as a
Poisson count of rate λ + s², which has its mean and variance (the shifted Poisson model of a
CCD). The object moves by L-BFGS over the lit region, preconditioned by its light, and with it the
probe's far field within the zone plate's pupil (ePIE fitted its probe to amplitudes too; held to
the pupil it cannot take up the object's structure). Measured in ``docs/reconstruction-quality.md``,
"A likelihood finish and a probe held to its pupil", "Read noise in the likelihood finish and in
the photon rule" and "The probe refined in the likelihood finish".

Pixels lit by a few photons over the whole scan are not determined by them, and a large frame's
faint probe tails light hundreds of thousands of them: free, they let the model fit the photon
noise of the bright field instead of the object. :func:`finish` runs the finish with them free and
with them held, and keeps the free model only where it explains the counts better than noise
fitting would (measured in "Pixels too dim to be unknowns").
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

import numpy as np
from scipy import fft

from cosmic_dagster.ptycho import verdict

#: L-BFGS iterations of the finish (each costs one forward and one back transform per frame).
DEFAULT_ITERATIONS = 60
#: The engine parameter (recorded in its output) that says how many iterations finished the object.
PARAMETER = "likelihood_iterations"
#: Read noise (rms, photons) up to which a count is a photon or none; beyond it, the shifted
#: Poisson model (``docs/reconstruction-quality.md`` measures both on either side) ...
COUNTING_NOISE = 0.5
#: ... where counts under this are read noise, not photons, ...
ZERO_BELOW = 0.5
#: ... and the model's rate is at least this (photons per pixel; the shift s² keeps it above 0).
RATE_FLOOR = 0.05
#: Far fields transformed at once (pixels of a chunk of frames: 32 MB of complex64).
_CHUNK_PIXELS = 1 << 22
#: Light under this share of the peak counts as this share (the preconditioner's bound).
_TINY_LIGHT = 1e-3
#: Steps the L-BFGS remembers; sufficient decrease of its line search; its shortest step.
_MEMORY = 8
_ARMIJO = 1e-4
_SHORTEST_STEP = 1 / 64
#: The minimisation ends once a step lowers the cost by less than this share of it.
_CONVERGED = 1e-7
#: A pixel lit by fewer photons than this over the scan is dim: its own photons leave it an error
#: of at least 1/√10 ≈ 0.32 (the Cramér-Rao limit of a pixel alone), over the robustness
#: benchmark's success threshold of 0.15 ...
DIM_PIXEL_PHOTONS = 10.0
#: ... and held, it is held at the object's mean over the pixels lit by at least this share of the
#: peak light (the well-lit region, where the mean transmission is known) ...
_WELL_LIT_SHARE = 0.5
#: ... unless freeing the dim pixels gains more than noise fitting would by this many of its
#: standard deviations (:func:`finish`).
_NOISE_SPREADS = 3.0


def finished(parameters: Mapping[str, object]) -> bool:
    """Whether an engine's recorded parameters say the likelihood finished its object: its model's
    intensities are then the counts' rates, not amplitudes fitted to √N."""
    return bool(parameters.get(PARAMETER))


@dataclass(frozen=True)
class Finished:
    """The finish's model and its Fourier error Σ(|Ψ| - √I)² / ΣI over the usable pixels, as the
    engine's history counts it."""

    object: np.ndarray
    probe: np.ndarray
    fourier_error: float
    cost: float
    """The model's Poisson negative log-likelihood (:class:`PoissonCost`)."""
    held_dim: bool = False
    """True where :func:`finish` held the dim pixels (:data:`DIM_PIXEL_PHOTONS`)."""


def finish(
    obj: np.ndarray,
    probe: np.ndarray,
    frames: np.ndarray,
    positions_px: np.ndarray,
    light: np.ndarray,
    lit: np.ndarray,
    good: np.ndarray | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    pupil: np.ndarray | None = None,
) -> Finished:
    """:func:`refine` (same arguments), and where ``lit`` holds dim pixels (lit by fewer than
    :data:`DIM_PIXEL_PHOTONS`), :func:`refine` again with them held at the well-lit object's mean.
    Kept: the held model, unless freeing the dim pixels lowers the negative log-likelihood by more
    than fitting photon noise would (a likelihood-ratio test of the nested models: k real unknowns
    fitted to noise alone lower it by k/2 on average, with a spread of √(k/2); the free model must
    beat that by :data:`_NOISE_SPREADS` spreads).

    Why: on a 512² scan of 9 frames under a 20-pixel beam the free dim pixels fitted the noise
    (the model explained the counts better than the truth does, the image 0.216 off; held, 0.087);
    but where the frames hold what the model has no term for (air scatter, read noise), the dim
    pixels' scattering takes it up, and held, such scans come out worse."""
    free = refine(obj, probe, frames, positions_px, light, lit, good, iterations, pupil)
    bright = lit & (light >= DIM_PIXEL_PHOTONS)
    added = 2 * int(np.count_nonzero(lit & ~bright))  # real unknowns
    if iterations < 1 or added == 0 or not bright.any():
        return free
    mean = np.mean(obj[light >= _WELL_LIT_SHARE * float(light.max())])
    held = refine(
        np.where(bright, obj, mean), probe, frames, positions_px, light, bright, good, iterations, pupil
    )
    beyond_noise = held.cost - free.cost - added / 2
    return free if beyond_noise > _NOISE_SPREADS * math.sqrt(added / 2) else replace(held, held_dim=True)


def refine(
    obj: np.ndarray,
    probe: np.ndarray,
    frames: np.ndarray,
    positions_px: np.ndarray,
    light: np.ndarray,
    lit: np.ndarray,
    good: np.ndarray | None = None,
    iterations: int = DEFAULT_ITERATIONS,
    pupil: np.ndarray | None = None,
) -> Finished:
    """The object (complex64, changed only where ``lit``) and, where ``pupil`` is given (the
    zone plate's, 0/1 in FFT order), the probe within it that maximise the Poisson likelihood of
    ``frames`` (photon counts, centred, as stored), started from ``obj`` and ``probe``; without
    ``pupil`` the probe is held. ``good``: usable pixels in FFT order, None for all. ``light`` is
    the probe's summed intensity on the object grid (:func:`quality.illumination`, which the engine
    has in hand)."""
    h, w = frames.shape[1:]
    weight = np.ones((h, w), np.float32) if good is None else good.astype(np.float32)
    corners = np.asarray(positions_px).tolist()
    poisson = PoissonCost(frames, corners, weight, lit)
    if iterations < 1 or not lit.any():
        return Finished(
            obj, probe, _fourier_error(obj, probe, frames, weight, corners), poisson(obj, probe)[0]
        )
    # Newton's step for one pixel is about g / 4Σ|P|² (the cost's curvature there is 2Σ|P|²)
    object_step = np.where(lit, 1 / (4 * np.maximum(light, _TINY_LIGHT * float(light.max()))), 0)
    if pupil is None:

        def held(current: np.ndarray) -> tuple[float, np.ndarray]:
            total, to_object, _ = poisson(current, probe)
            return total, to_object

        refined, cost = _minimise(held, obj.astype(np.complex64), object_step, iterations)
        return Finished(refined, probe, _fourier_error(refined, probe, frames, weight, corners), cost)
    refined, field, cost = _refine_with_probe(poisson, obj, probe, pupil, object_step, iterations)
    return Finished(refined, field, _fourier_error(refined, field, frames, weight, corners), cost)


def _refine_with_probe(
    poisson: PoissonCost,
    obj: np.ndarray,
    probe: np.ndarray,
    pupil: np.ndarray,
    object_step: np.ndarray,
    iterations: int,
) -> tuple[np.ndarray, np.ndarray, float]:
    """Object, probe and cost by one L-BFGS over a single vector: the object, then the probe's far
    field within ``pupil``, unitary-normalised so that one step moves both alike."""
    h, w = probe.shape
    mask = pupil.real.astype(np.float32)
    size = obj.size

    def pack(on_object: np.ndarray, on_far_field: np.ndarray) -> np.ndarray:
        return np.concatenate([on_object.ravel(), (on_far_field * mask).astype(on_object.dtype).ravel()])

    def unpack(variables: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        far_field = variables[size:].reshape(h, w)
        return variables[:size].reshape(obj.shape), fft.ifft2(far_field, norm="ortho", workers=1)

    def cost(variables: np.ndarray) -> tuple[float, np.ndarray]:
        total, to_object, to_probe = poisson(*unpack(variables), with_probe=True)
        return total, pack(to_object, fft.fft2(to_probe, norm="ortho", workers=1))

    # the probe's far field: about g / 4⟨Σ|O|²⟩ (the object's light on the frames' windows, averaged),
    # as the object's step is g / 4Σ|P|²
    exposure = sum(np.abs(obj[y : y + h, x : x + w]) ** 2 for y, x in poisson.corners)
    probe_step = np.full((h, w), 1 / (4 * max(float(np.mean(exposure)), 1e-30)))
    start = pack(obj.astype(np.complex64), fft.fft2(probe, norm="ortho", workers=1))
    preconditioner = pack(object_step, probe_step).astype(np.float32)
    found, value = _minimise(cost, start, preconditioner, iterations)
    return *unpack(found), value


class PoissonCost:
    """Σ λ - N log λ over the usable pixels of every frame, λ = |F(P·O_j)|² / (h w) + the floor or
    the read noise's shift (see the module docstring), and its gradients."""

    def __init__(
        self, frames: np.ndarray, corners: list[list[int]], weight: np.ndarray, lit: np.ndarray
    ) -> None:
        h, w = frames.shape[1:]
        self.counts = np.fft.ifftshift(frames, axes=(-2, -1)).astype(np.float32)
        read_noise = verdict.read_noise_estimate(frames)
        if read_noise > COUNTING_NOISE:  # the shifted Poisson model
            self.shift = np.float32(read_noise**2)
            self.counts += self.shift
            np.maximum(self.counts, 0, out=self.counts)
        else:
            self.shift = np.float32(RATE_FLOOR)
            self.counts[self.counts < ZERO_BELOW] = 0
        self.corners, self.weight, self.lit = corners, weight, lit
        per_chunk = max(1, _CHUNK_PIXELS // (h * w))
        self.chunks = np.array_split(np.arange(len(corners)), -(-len(corners) // per_chunk))

    def __call__(
        self, obj: np.ndarray, probe: np.ndarray, *, with_probe: bool = False
    ) -> tuple[float, np.ndarray, np.ndarray]:
        """The cost, its gradient 2 ∂/∂O* (zero where not lit) and, ``with_probe``, 2 ∂/∂P* (else 0)."""
        h, w = probe.shape
        scale = np.float32(1 / (h * w))
        to_object = np.zeros(obj.shape, np.complex64)
        to_probe = np.zeros((h, w), np.complex64)
        conjugate = np.conjugate(probe)
        total = 0.0
        for chunk in self.chunks:
            views = np.stack([obj[y : y + h, x : x + w] for y, x in (self.corners[k] for k in chunk)])
            spectra = fft.fft2(probe * views, workers=1, overwrite_x=True)
            rates = np.abs(spectra) ** 2
            rates *= scale
            rates += self.shift
            counts = self.counts[chunk]
            total += float(np.sum(self.weight * (rates - counts * np.log(rates)), dtype=np.float64))
            spectra *= self.weight * (1 - counts / rates)
            back = fft.ifft2(spectra, workers=1, overwrite_x=True)
            if with_probe:
                to_probe += np.einsum("kyx,kyx->yx", back, np.conjugate(views))
            back *= conjugate
            for k, step in zip(chunk, back, strict=True):
                y, x = self.corners[k]
                to_object[y : y + h, x : x + w] += step
        to_object *= 2 * self.lit
        to_probe *= 2
        return total, to_object, to_probe


def _minimise(
    cost: Callable[[np.ndarray], tuple[float, np.ndarray]],
    start: np.ndarray,
    preconditioner: np.ndarray,
    iterations: int,
) -> tuple[np.ndarray, float]:
    """Limited-memory BFGS (the two-loop recursion over :data:`_MEMORY` steps, the diagonal
    ``preconditioner`` as the starting inverse Hessian) with a backtracking line search, over
    complex arrays (inner products Re Σ a* b, as over their real and imaginary parts); the minimum
    found and the cost there."""
    x = start
    value, gradient = cost(x)
    steps: list[tuple[np.ndarray, np.ndarray, float]] = []
    for _ in range(iterations):
        direction = -_inverse_hessian_times(gradient, steps, preconditioner)
        slope = _dot(gradient, direction)
        if not slope < 0:
            break
        length = 1.0
        while True:
            trial = x + np.complex64(length) * direction
            trial_value, trial_gradient = cost(trial)
            if trial_value <= value + _ARMIJO * length * slope:
                break
            length /= 2
            if length < _SHORTEST_STEP:  # no decrease left that single precision can show
                return x, value
        if value - trial_value <= _CONVERGED * abs(value):
            return trial, trial_value
        moved, change = trial - x, trial_gradient - gradient
        curvature = _dot(moved, change)
        if curvature > 0:
            steps = [*steps[-(_MEMORY - 1) :], (moved, change, 1 / curvature)]
        x, value, gradient = trial, trial_value, trial_gradient
    return x, value


def _inverse_hessian_times(
    gradient: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray, float]], preconditioner: np.ndarray
) -> np.ndarray:
    q = gradient.copy()
    alphas = []
    for moved, change, rho in reversed(steps):
        alpha = rho * _dot(moved, q)
        q -= np.complex64(alpha) * change
        alphas.append(alpha)
    q *= preconditioner
    if steps:  # the preconditioner scaled by the latest curvature, as in the textbook
        moved, change, _ = steps[-1]
        q *= np.float32(_dot(moved, change) / max(_dot(change, preconditioner * change), 1e-300))
    for (moved, change, rho), alpha in zip(steps, reversed(alphas), strict=True):
        beta = rho * _dot(change, q)
        q += np.complex64(alpha - beta) * moved
    return q


def _dot(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.vdot(a, b).real)


def _fourier_error(
    obj: np.ndarray, probe: np.ndarray, frames: np.ndarray, weight: np.ndarray, corners: list[list[int]]
) -> float:
    """Σ(|Ψ| - √I)² / ΣI over the usable pixels, negative counts as none (as ePIE's history)."""
    h, w = probe.shape
    squared = total = 0.0
    for k, (y, x) in enumerate(corners):
        model = np.abs(fft.fft2(probe * obj[y : y + h, x : x + w], workers=1)) / np.float32(np.sqrt(h * w))
        counts = np.maximum(np.fft.ifftshift(frames[k]), 0)
        squared += float(np.sum(weight * (model - np.sqrt(counts)) ** 2))
        total += float(np.sum(weight * counts))
    return squared / max(total, 1e-30)
