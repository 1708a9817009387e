"""The bright-field parallax finds the defocus's sign and magnitude from the frames alone, for
either convention a file may follow, and finds nothing where there is no image to follow."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cosmic_dagster.ptycho import cxi, parallax, simulate
from cosmic_dagster.ptycho.simulate import SimulationSpec

NAME = "NS_230216033_ccdframes_0_0.cxi"


@pytest.mark.parametrize(
    ("defocus_um", "fft_sign", "sample"),
    [(20.0, 1, "particles"), (-20.0, 1, "cells"), (25.0, -1, "lines"), (-25.0, -1, "siemens_star")],
)
def test_the_strongest_seed_has_the_sign_and_magnitude_the_engine_needs(
    tmp_path: Path, defocus_um: float, fft_sign: int, sample: str
) -> None:
    """Mirrored patterns (the other FFT sign) need the opposite defocus: the parallax says so. At
    400 eV these beams span 8-10 Fresnel zones (56-70 px, 70 % overlap)."""
    geometry = SimulationSpec(
        frame_size=128, energy_ev=400.0, detector_pixel_m=120e-6, defocus_m=defocus_um * 1e-6
    )
    spec = replace(
        geometry, n_side=5, step_px=0.3 * geometry.beam_diameter_px, photons=1e6, seed=3, sample=sample,
        fft_sign=fft_sign,
    )  # fmt: skip
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, spec))
    seeds = parallax.defocus_seeds(scan)
    needed = defocus_um * 1e-6 * fft_sign
    assert seeds and 1 / 1.2 <= seeds[0] / needed <= 1.2, (seeds, needed)


@pytest.mark.parametrize("defocus_um", [6.0, 30.0])
def test_the_fresnel_number_is_measured_from_the_disc(tmp_path: Path, defocus_um: float) -> None:
    """(D/2)²/(λz) = z λ / (4 Δr²) for a zone plate of outer zone Δr (its cone's half-angle λ/2Δr)."""
    spec = replace(SimulationSpec.tiny(), defocus_m=defocus_um * 1e-6)
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, spec))
    _, _, disc_radius_px = parallax.parallax_scores(scan)
    expected = defocus_um * 1e-6 * scan.wavelength_m / (4 * spec.outer_zone_m**2)
    assert parallax.fresnel_number(scan, disc_radius_px, defocus_um * 1e-6) == pytest.approx(
        expected, rel=0.05
    )


def test_near_focus_the_parallax_gives_no_seed(tmp_path: Path) -> None:
    """At 6 µm and 800 eV the beam spans one Fresnel zone: the image moves less than m·Δ, so the
    strongest parallax names too large a defocus; it is not offered."""
    geometry = replace(SimulationSpec.tiny(), defocus_m=6e-6)
    spec = replace(geometry, step_px=0.3 * geometry.beam_diameter_px, photons=1e7, sample="particles")
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, spec))
    _, scores, _ = parallax.parallax_scores(scan)
    assert np.isfinite(scores).any()  # there is a parallax to measure ...
    assert parallax.defocus_seeds(scan) == ()  # ... but not one to trust


def test_a_shift_too_small_to_see_tests_nothing(tmp_path: Path) -> None:
    """A candidate that moves the image under 3 px between neighbours cannot be told from an image
    that does not move (near focus the bright field barely changes): it is never scored, so the
    largest defocus values, which predict almost no movement, are never seeds by default."""
    spec = replace(SimulationSpec.tiny(), step_px=3.0)
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, spec))
    candidates, scores, _ = parallax.parallax_scores(scan)
    n_px, pixel_m = scan.frames.shape[1], scan.object_pixel_size_m[0]
    widest_step = max(
        np.hypot(*(scan.positions_px[j] - scan.positions_px[i]))
        for i, j in parallax.neighbour_pairs(scan.positions_px)
    )
    largest_shift = n_px * pixel_m**2 / (scan.wavelength_m * np.abs(candidates)) * widest_step
    too_small = largest_shift < parallax.MIN_SHIFT_PX
    assert too_small.any() and np.isfinite(scores[~too_small]).any()
    assert not np.isfinite(scores[too_small]).any()


def test_a_single_frame_or_a_dark_detector_gives_no_seed(tmp_path: Path) -> None:
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, SimulationSpec.tiny()))
    one_frame = replace(scan, frames=scan.frames[:1], positions_px=scan.positions_px[:1])
    dark = replace(scan, frames=np.zeros_like(scan.frames))
    assert parallax.defocus_seeds(one_frame) == ()
    assert parallax.defocus_seeds(dark) == ()


def test_neighbour_pairs_link_each_frame_to_its_nearest_once() -> None:
    grid = np.array([(y, x) for y in (0.0, 10.0, 20.0) for x in (0.0, 10.0, 20.0)])
    pairs = parallax.neighbour_pairs(grid, k=4)
    assert len(pairs) == len(set(pairs)) and all(i < j for i, j in pairs)
    assert (0, 1) in pairs and (0, 3) in pairs and (3, 4) in pairs  # raster neighbours
    assert (0, 8) not in pairs  # opposite corners are never neighbours
