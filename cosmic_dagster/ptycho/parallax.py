"""Probe defocus from the parallax of the bright-field image, without reconstructing anything.

A defocused beam is a point source (its focus) a distance z from the sample, so the bright-field
disc of each frame holds a magnified in-line image of the sample. Moving the sample by Δ moves that
image by m·Δ on the detector: m = L/z in metres, or m = N·dx²/(λ·z) in detector pixels per object
pixel (N the frame's size, dx the object pixel; dx = λL/(Np)). The sign of the movement gives the
sign of z as the engine needs it (the side of the focus, and the file's FFT convention, flip it
together), its size gives |z|. Tilt-corrected bright-field STEM measures defocus the same way.

Neighbouring frames' disc contrasts are cross-correlated once; each candidate z predicts where
their correlation peaks, and the candidate whose prediction agrees best (the strongest local
maximum over z) joins the auto-focus trials' candidates (:mod:`~cosmic_dagster.ptycho.focus`).
Only where the beam spans several Fresnel zones: nearer focus the image moves less than m·Δ and
the strongest maximum names too large a |z| (:data:`MIN_FRESNEL_NUMBER`). It costs a few FFTs per
frame of a central patch; it finds nothing where the scan holds too few neighbours.
"""

from __future__ import annotations

import numpy as np
from scipy import fft, ndimage

from cosmic_dagster.ptycho import cxi

#: Candidate |z| (m): COSMIC's ±5-40 µm with a margin (the seeds are tried at 2^±¼ times), log-spaced.
DEFOCUS_RANGE_M = (4e-6, 60e-6)
CANDIDATES_PER_SIGN = 241
#: The disc is where the smoothed mean pattern exceeds this share of its 97th percentile (the disc
#: covers more than 3 % of a COSMIC frame; a brighter percentile would follow hot pixels) ...
DISC_LEVEL = 0.3
#: ... eroded by this many pixels: the disc's edge moves with the sample's mean phase gradient,
#: not with the parallax, and would dominate the correlation.
DISC_EROSION_PX = 2
#: A predicted shift counts only where the two discs still overlap by this share of the disc.
MIN_DISC_OVERLAP = 0.15
#: ... and only where it moves the image this far (detector pixels): a smaller shift cannot be told
#: from an image that does not move at all (a beam near focus, whose bright field barely changes).
MIN_SHIFT_PX = 3.0
#: Each frame is correlated with its nearest neighbours in the scan ...
NEIGHBOURS = 4
#: ... within a central patch of at most this many frames (bounds time and memory on big scans).
PATCH_FRAMES = 48
#: The parallax is geometric (the image moves by m·Δ) only where the beam spans several Fresnel
#: zones, (D/2)²/(λ|z|) for a beam D wide; nearer focus the image moves less (not at all in the
#: far-field limit), so the correlation peaks at too large a |z|. The strongest seed over the true
#: defocus on the benchmark's seeds 8-9: median 1.21 (quartiles 1.02-1.62) under 2 zones, 1.08 at
#: 2-3, 1.04 at 3-4, 1.02 at 4-6, 1.01 (1.00-1.03) above 6. A strongest seed under this gives none.
MIN_FRESNEL_NUMBER = 6.0


def defocus_seeds(scan: cxi.ScanData) -> tuple[float, ...]:
    """The strongest parallax maximum's defocus (m, signed as the engine needs it), as the
    auto-focus's seed; empty when no candidate's prediction can be tested (too few frames, no disc)
    or the maximum lies where the parallax is not geometric (under :data:`MIN_FRESNEL_NUMBER`)."""
    candidates, scores, disc_radius_px = parallax_scores(scan)
    peaks = [
        k
        for k in range(1, len(scores) - 1)
        if np.isfinite(scores[k]) and scores[k] > scores[k - 1] and scores[k] >= scores[k + 1]
    ]
    if not peaks:
        return ()
    strongest = float(candidates[max(peaks, key=lambda k: scores[k])])
    if fresnel_number(scan, disc_radius_px, strongest) < MIN_FRESNEL_NUMBER:
        return ()
    return (strongest,)


def fresnel_number(scan: cxi.ScanData, disc_radius_px: float, defocus_m: float) -> float:
    """(D/2)² / (λ|z|) of the beam a defocus implies, D its diameter on the sample: the number of
    Fresnel zones the beam spans; ``disc_radius_px`` is the bright-field disc's radius."""
    n_px = scan.frames.shape[1]
    pixel_m = scan.object_pixel_size_m[0]
    return disc_radius_px**2 * scan.wavelength_m * abs(defocus_m) / (n_px * pixel_m) ** 2


def parallax_scores(scan: cxi.ScanData) -> tuple[np.ndarray, np.ndarray, float]:
    """Signed candidate defocus values (m); per candidate, how well the disc images of
    neighbouring frames agree at the shifts it predicts (summed normalised correlations; -inf
    where no neighbour pair can test it); and the disc's radius (pixels)."""
    patch = cxi.central_frames(scan, PATCH_FRAMES)
    good = np.ones(scan.frames.shape[1:], bool) if scan.bad_pixels is None else ~scan.bad_pixels
    counts = np.maximum(scan.frames[patch].astype(np.float32), 0) * good
    mean = counts.mean(axis=0)
    contrast, disc = bright_field_contrast(counts, mean, good)
    magnitudes = np.geomspace(*DEFOCUS_RANGE_M, CANDIDATES_PER_SIGN)
    candidates = np.concatenate([-magnitudes[::-1], magnitudes])
    scores = np.full(len(candidates), -np.inf)
    area = int(disc.sum())
    if area == 0 or len(patch) < 2:
        return candidates, scores, 0.0
    n_px = scan.frames.shape[1]
    pixel_m = scan.object_pixel_size_m[0]
    per_object_px = n_px * pixel_m**2 / (scan.wavelength_m * candidates)  # m of the module docstring
    shape = contrast.shape[1:]  # real images, so half spectra: about half the time of complex FFTs
    spectra = fft.rfft2(contrast, workers=1)
    disc_spectrum = fft.rfft2(disc.astype(np.float32), workers=1)
    overlap = fft.irfft2(np.conj(disc_spectrum) * disc_spectrum, shape, workers=1)
    patch_positions = scan.positions_px[patch]
    for i, j in neighbour_pairs(patch_positions):
        correlation = fft.irfft2(np.conj(spectra[i]) * spectra[j], shape, workers=1)
        dy, dx = patch_positions[j] - patch_positions[i]
        shared = _sample(overlap, per_object_px * dy, per_object_px * dx)
        value = _sample(correlation, per_object_px * dy, per_object_px * dx) / np.maximum(shared, 1.0)
        moved = np.hypot(per_object_px * dy, per_object_px * dx) >= MIN_SHIFT_PX
        testable = (shared > MIN_DISC_OVERLAP * area) & moved
        scores = np.where(testable, np.where(np.isfinite(scores), scores, 0.0) + value, scores)
    return candidates, scores, _disc_radius_px(mean, good)


def bright_field_contrast(
    counts: np.ndarray, mean: np.ndarray, good: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Per frame of ``counts`` (usable pixels only; ``mean`` their mean pattern), √counts over the
    mean's inside the eroded bright-field disc, less what all frames share (the pupil, a
    background: what does not move with the sample); and that disc."""
    smoothed = ndimage.uniform_filter(mean, 5)
    disc = smoothed > DISC_LEVEL * np.percentile(smoothed[good], 97)
    disc = ndimage.binary_erosion(disc, iterations=DISC_EROSION_PX) & good
    contrast = np.where(disc, np.sqrt(counts) / np.sqrt(np.maximum(mean, 1e-12)) - 1, 0).astype(np.float32)
    contrast -= np.where(disc, contrast.sum(axis=(1, 2), keepdims=True) / max(int(disc.sum()), 1), 0)
    contrast -= contrast.mean(axis=0, keepdims=True)
    return contrast * disc, disc


def _disc_radius_px(mean: np.ndarray, good: np.ndarray) -> float:
    """The bright-field disc's outer radius: where the mean pattern is above half the disc's level
    (its edge at half height), the 99th percentile of the distances from their centroid."""
    rows, cols = np.nonzero(mean > 0.5 * np.percentile(mean[good], 97))
    if rows.size == 0:
        return 0.0
    return float(np.percentile(np.hypot(rows - rows.mean(), cols - cols.mean()), 99))


def neighbour_pairs(positions: np.ndarray, k: int = NEIGHBOURS) -> list[tuple[int, int]]:
    """Each frame with its ``k`` nearest frames in the scan, each pair once."""
    pairs: set[tuple[int, int]] = set()
    for i, position in enumerate(positions):
        distances = np.sum((positions - position) ** 2, axis=1)
        for j in np.argsort(distances, kind="stable")[1 : k + 1]:
            pairs.add((min(i, int(j)), max(i, int(j))))
    return sorted(pairs)


def _sample(image: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Bilinear samples of a periodic image (a circular correlation) at fractional (y, x)."""
    h, w = image.shape
    y0, x0 = np.floor(y).astype(np.int64), np.floor(x).astype(np.int64)
    fy, fx = y - y0, x - x0
    rows, rows1, cols, cols1 = y0 % h, (y0 + 1) % h, x0 % w, (x0 + 1) % w
    return (
        image[rows, cols] * (1 - fy) * (1 - fx)
        + image[rows1, cols] * fy * (1 - fx)
        + image[rows, cols1] * (1 - fy) * fx
        + image[rows1, cols1] * fy * fx
    )
