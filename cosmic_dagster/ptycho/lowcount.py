"""Frames with few photons per pixel: detector binning where the beam is much smaller than the frame.

At under a photon or so per pixel an amplitude engine fits E[√N] (mostly 0 or 1) instead of √λ, so
its model loses photons and with them the weak scattering that carries the fine detail. Where the
beam on the sample is much smaller than the frame's field of view, the far field is oversampled
far beyond what the exit wave needs: summing b x b detector pixels and reconstructing in a field of
view b times smaller (same object pixel size) keeps what the data hold, multiplies the counts per
pixel by b² and the speed by about b². Binning stays off at higher counts, where the small
mismatch of a binned model (it samples the far field where the data integrate it) would show.
Measured in ``docs/reconstruction-quality.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from cosmic_dagster.ptycho import cxi, optics

#: Bin until a cone pixel holds this many photons per frame (where the amplitude bias is small) ...
TARGET_PHOTONS_PER_PIXEL = 4.0
#: ... while the binned field of view stays at least this many beam diameters wide (3, not the 4
#: first chosen: at a photon or so per pixel twice the counts per pixel gave better images, while
#: 2 beams wide made some worse; ``docs/reconstruction-quality.md``, "A binning window of 3 beams")
#: ...
MIN_WINDOW_BEAMS = 3.0
#: ... and this many pixels.
MIN_WINDOW_PX = 32
#: A bin with less than this share of usable pixels is bad.
MIN_USABLE_SHARE = 0.5
#: Below this many photons per cone pixel the auto-focus scores its trials by the Poisson deviance
#: (from 2 to 10 both scores chose as well over the benchmark's eight seeds, and the amplitude
#: error passed no garbage there).
POISSON_SCORE_BELOW = 2.0
#: A far-field ring is in the beam's cone where its mean count exceeds this share of the brightest.
_CONE_LEVEL = 0.1


@dataclass(frozen=True)
class Cone:
    """The beam's far-field cone (the zone plate's pupil) as the mean pattern shows it."""

    radius_px: float
    """Outer radius on the detector (pixels)."""
    photons_per_px: float
    """Mean photons per frame in one usable pixel of the cone."""

    @property
    def low_count(self) -> bool:
        """So few photons that the amplitude error is biased (the auto-focus scores by deviance)."""
        return self.photons_per_px < POISSON_SCORE_BELOW


def measure_cone(scan: cxi.ScanData) -> Cone:
    """The cone from the azimuthal mean of the mean pattern (robust at any dose: it pools every
    frame and every pixel of a ring)."""
    mean = np.maximum(scan.frames.mean(axis=0, dtype=np.float64), 0)
    good = np.ones(mean.shape, bool) if scan.bad_pixels is None else ~scan.bad_pixels
    y, x = np.indices(mean.shape)
    ring = np.rint(np.hypot(y - mean.shape[0] // 2, x - mean.shape[1] // 2)).astype(np.int64)
    rings = int(ring.max()) + 1
    profile = np.bincount(ring[good], mean[good], rings) / np.maximum(np.bincount(ring[good], None, rings), 1)
    lit = profile > _CONE_LEVEL * profile.max()
    if not lit.any():  # no photon at all: nothing to bin for
        return Cone(radius_px=float(rings), photons_per_px=0.0)
    in_cone = good & lit[ring]
    return Cone(
        radius_px=float(np.flatnonzero(lit).max()) + 0.5,
        photons_per_px=float(mean[in_cone].sum() / max(int(in_cone.sum()), 1)),
    )


def beam_diameter_px(scan: cxi.ScanData, cone: Cone, defocus_m: float) -> float:
    """The beam's diameter on the sample (object pixels) at ``defocus_m``: the cone's geometric
    width there plus about the focal spot's, N / radius."""
    n = scan.frames.shape[-1]
    pixel_m = scan.object_pixel_size_m[0]
    cone_width_m = optics.beam_diameter_m(defocus_m, scan.wavelength_m, cone.radius_px / (n * pixel_m))
    return cone_width_m / pixel_m + n / max(cone.radius_px, 1.0)


def binning_factor(scan: cxi.ScanData, cone: Cone, defocus_m: float) -> int:
    """The power of two to bin the detector by (1: not at all)."""
    h, w = scan.frames.shape[1:]
    beam = beam_diameter_px(scan, cone, defocus_m)
    factor = 1
    while cone.photons_per_px * factor**2 < TARGET_PHOTONS_PER_PIXEL:
        window_h, window_w = h // (2 * factor), w // (2 * factor)
        if (
            h % (4 * factor)
            or w % (4 * factor)
            or min(window_h, window_w) < max(MIN_WINDOW_PX, MIN_WINDOW_BEAMS * beam)
        ):
            break
        factor *= 2
    return factor


class BinnedFrames:
    """A scan's frames binned by each factor asked for, each factor binned once: the auto-focus's
    trials bin one patch of frames at most of their candidate defocus values, and binning it
    again for each took as long as a binned trial's iterations."""

    def __init__(self, source: cxi.ScanData) -> None:
        self.source = source
        self._by_factor: dict[int, cxi.ScanData] = {}

    def scan(self, factor: int, probe: np.ndarray) -> cxi.ScanData:
        """The scan seen by a detector of ``factor`` x ``factor`` pixels per pixel, with the field
        of view cut to its centre (frame corners move in by half the cut); ``probe`` (the
        full-frame, already defocused initial probe) becomes the probe guess, to be used as stored
        (defocus 0).

        Bins are centred on the DC pixel (to half a pixel: :func:`unbin_probe` undoes that
        offset). A bin counts its usable pixels scaled to the whole bin (a scattered hot pixel
        would otherwise take a bin's constraint away); with fewer than :data:`MIN_USABLE_SHARE` of
        them usable it is bad.
        """
        if factor not in self._by_factor:
            self._by_factor[factor] = _bin_frames(self.source, factor)
        binned = self._by_factor[factor]
        h, w = self.source.frames.shape[1:]
        bh, bw = binned.frames.shape[1:]
        top, left = (h - bh) // 2, (w - bw) // 2
        guess = probe[top : top + bh, left : left + bw] * _half_pixel_ramp((h, w), (bh, bw))
        return replace(binned, probe_guess=guess.astype(np.complex64))


def _bin_frames(scan: cxi.ScanData, factor: int) -> cxi.ScanData:
    """Frames, bad pixels, positions and detector pixel of :meth:`BinnedFrames.scan` (its probe
    guess still the scan's)."""
    h, w = scan.frames.shape[1:]
    bh, bw = h // factor, w // factor
    if scan.bad_pixels is None:
        binned, bad = bin_sum(scan.frames, factor), None
    else:
        good = ~scan.bad_pixels
        usable = bin_sum(good.astype(np.float32), factor)
        binned = bin_sum(scan.frames * good, factor) * np.float32(factor**2) / np.maximum(usable, 1)
        bad = np.asarray(usable < factor**2 * MIN_USABLE_SHARE, bool)
    top, left = (h - bh) // 2, (w - bw) // 2
    return replace(
        scan,
        frames=binned.astype(np.float32, copy=False),
        bad_pixels=bad,
        positions_px=scan.positions_px + np.array([top, left], np.float64),
        pixel_size_m=(scan.pixel_size_m[0] * factor, scan.pixel_size_m[1] * factor),
    )


def bin_sum(images: np.ndarray, factor: int) -> np.ndarray:
    """Sums over ``factor`` x ``factor`` pixels of DC-centred images (last two axes), the bins
    centred on the DC pixel to half a pixel: the detector :meth:`BinnedFrames.scan` sees (float32
    at least). Images in FFT order are binned about their DC pixel alike, and stay in FFT order."""
    h, w = images.shape[-2:]
    half = factor // 2
    rolled = np.roll(images, (half, half), axis=(-2, -1))
    return rolled.reshape(*images.shape[:-2], h // factor, factor, w // factor, factor).sum(
        axis=(-3, -1), dtype=np.result_type(images.dtype, np.float32)
    )


def unbin_probe(probe: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """A binned reconstruction's probe on the full frame (zero outside the binned field of view)."""
    bh, bw = probe.shape
    top, left = (shape[0] - bh) // 2, (shape[1] - bw) // 2
    full = np.zeros(shape, np.complex64)
    full[top : top + bh, left : left + bw] = probe * np.conj(_half_pixel_ramp(shape, (bh, bw)))
    return full


def _half_pixel_ramp(full: tuple[int, int], binned: tuple[int, int]) -> np.ndarray:
    """The phase that moves the binned model's far-field samples onto the bins' centres, half a
    (full-frame) pixel off the DC pixel for an even factor."""
    y, x = np.indices(binned, dtype=np.float64)
    y -= binned[0] // 2
    x -= binned[1] // 2
    return np.exp(1j * math.pi * (y / full[0] + x / full[1]))
