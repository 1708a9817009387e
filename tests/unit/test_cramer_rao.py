"""The noise limit of a scan: the Fisher information against finite differences of the counts, the
whole-scan bound against a dense inverse, and where it lies against the pixelwise bound and ePIE."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from cosmic_dagster.ptycho import cramer_rao, cxi, epie, quality, simulate

#: A 4 x 4 raster with a step of a third of the beam: more counts than unknowns, as in a scan.
POSITIONS = np.array([[y, x] for y in (0, 1, 3, 4) for x in (0, 2, 3, 4)])


def _small_scan(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A 10 x 10 object under a 6 x 6 beam at 16 positions, a background, one bad pixel."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.5, 1.0, (10, 10)) * np.exp(1j * rng.uniform(-1, 1, (10, 10)))
    probe = 3 * rng.uniform(0.5, 1.5, (6, 6)) * np.exp(1j * rng.uniform(-3, 3, (6, 6)))
    background = np.linspace(0.05, 0.6, 36).reshape(6, 6)  # uneven: a misplaced DC would show
    bad = np.zeros((6, 6), bool)
    bad[1, 4] = True
    return truth, probe, background, bad


def _counts(obj: np.ndarray, probe: np.ndarray, background: np.ndarray, fft_sign: int) -> np.ndarray:
    """Expected DC-centred counts of every frame, as the simulator forms them before the noise."""
    transform = np.fft.fft2 if fft_sign > 0 else np.fft.ifft2
    waves = np.stack([probe * obj[y : y + 6, x : x + 6] for y, x in POSITIONS])
    return np.abs(np.fft.fftshift(transform(waves, norm="ortho"), axes=(-2, -1))) ** 2 + background


def _dense_fisher(
    truth: np.ndarray,
    probe: np.ndarray,
    background: np.ndarray,
    bad: np.ndarray,
    fft_sign: int,
    read_noise: float = 0.0,
):
    """Σ ∇λ ∇λᵀ I(λ) over the good pixels (I = 1/λ without read noise), ∇ by central differences
    over (Re O, Im O)."""
    base = _counts(truth, probe, background, fft_sign)
    columns = []
    for k in range(2 * truth.size):
        step = np.zeros(2 * truth.size)
        step[k] = 1e-6
        delta = (step[: truth.size] + 1j * step[truth.size :]).reshape(truth.shape)
        plus = _counts(truth + delta, probe, background, fft_sign)
        minus = _counts(truth - delta, probe, background, fft_sign)
        columns.append(((plus - minus) / 2e-6)[:, ~bad])
    jacobian = np.stack(columns, axis=-1).reshape(-1, 2 * truth.size)
    information = cramer_rao.rate_information(base[:, ~bad], read_noise).reshape(-1, 1)
    return jacobian.T @ (jacobian * information)


@pytest.mark.parametrize(("fft_sign", "read_noise"), [(1, 0.0), (-1, 0.0), (1, 0.4)])
def test_fisher_information_matches_finite_differences_of_the_counts(
    fft_sign: int, read_noise: float
) -> None:
    truth, probe, background, bad = _small_scan()
    operator = cramer_rao.FisherInformation(
        truth,
        probe,
        POSITIONS,
        background=background,
        bad_pixels=bad,
        fft_sign=fft_sign,
        read_noise=read_noise,
    )
    columns = []
    for k in range(2 * truth.size):
        unit = np.zeros(2 * truth.size)
        unit[k] = 1
        out = operator((unit[: truth.size] + 1j * unit[truth.size :]).reshape(truth.shape))
        columns.append(np.concatenate([out.real.ravel(), out.imag.ravel()]))
    dense = _dense_fisher(truth, probe, background, bad, fft_sign, read_noise)
    np.testing.assert_allclose(np.stack(columns, axis=1), dense, rtol=1e-5, atol=1e-6 * np.abs(dense).max())


def test_read_noise_takes_information_from_dim_pixels_and_little_from_bright_ones() -> None:
    """A photon counter's count holds 1/λ about its rate. With read noise of rms s a count near
    zero holds e^(1/s²) - 1 (the two outcomes none and one photon, blurred by s), far less than 1/λ
    at low rates; bright pixels hold 1 / (λ + s²); at 0.1 photon rms a photon still stands out and
    nothing is lost."""
    rates = np.array([1e-6, 1e-3, 0.1, 1.0, 10.0, 29.9, 30.0, 300.0])
    assert np.array_equal(cramer_rao.rate_information(rates), 1 / rates)
    noisy = cramer_rao.rate_information(rates, 0.5)
    assert noisy[0] == pytest.approx(math.expm1(4), rel=1e-3)
    assert np.all(noisy <= 1 / rates) and np.all(np.diff(noisy) < 0)
    np.testing.assert_allclose(noisy[-3:], 1 / (rates[-3:] + 0.25), rtol=1e-3)
    np.testing.assert_allclose(cramer_rao.rate_information(rates, 0.1) * rates, 1, rtol=1e-3)


def test_whole_scan_bound_is_the_trace_of_the_inverse_information() -> None:
    """Against a dense pseudo-inverse with the global phase projected out (every pixel is in the
    support here: the beam never falls under a thousandth of its peak)."""
    truth, probe, background, bad = _small_scan(1)
    dense = _dense_fisher(truth, probe, background, bad, 1)
    exposure = quality.illumination(probe, POSITIONS, truth.shape)
    footprint = np.concatenate([(exposure > 0).ravel()] * 2)
    lit = np.concatenate([quality.lit_mask(exposure).ravel()] * 2)
    phase = np.concatenate([(1j * truth).real.ravel(), (1j * truth).imag.ravel()]) * footprint
    phase /= np.linalg.norm(phase)
    keep = np.eye(phase.size) - np.outer(phase, phase)
    sub = np.ix_(footprint, footprint)
    covariance = np.linalg.pinv((keep @ dense @ keep)[sub], hermitian=True, rcond=1e-10)
    in_footprint = lit[footprint]
    expected = math.sqrt(
        np.trace(covariance[np.ix_(in_footprint, in_footprint)])
        / np.sum(np.abs(truth[quality.lit_mask(exposure)]) ** 2)
    )
    information = cramer_rao.FisherInformation(truth, probe, POSITIONS, background=background, bad_pixels=bad)
    bound = cramer_rao.whole_scan_bound(information, probes=100)
    assert bound == pytest.approx(expected, rel=0.05)


def test_pixelwise_bound_is_one_over_root_photons_per_pixel() -> None:
    """Two overlapping exposures of a flat 4 x 4 beam: 1/N(r) averaged over the lit pixels."""
    truth = np.full((12, 12), 0.5 + 0j)
    probe = np.full((4, 4), 3.0, complex)  # 9 photons per pixel per exposure
    positions = np.array([[2, 2], [2, 4]])
    # Lit (>= half the peak of 18): all 4 x 6 pixels; 8 of them got 18 photons, 16 got 9.
    expected = math.sqrt((8 / 18 + 16 / 9) / (24 * 0.25))
    assert cramer_rao.pixelwise_bound(truth, probe, positions) == pytest.approx(expected)
    assert cramer_rao.pixelwise_bound(truth, 10 * probe, positions) == pytest.approx(expected / 10)


def test_epie_lands_above_the_whole_scan_bound_which_the_background_raises(tmp_path: Path) -> None:
    """ePIE on a dim simulated scan lands above the limits computed from the truth it never saw.
    Coupling the pixels raises the pixelwise bound, and air scatter, which adds counts that carry no
    image, raises it more (at lower dose ePIE learns so little that it beats them: a biased estimate
    near the object's mean is not bound by Cramér-Rao)."""
    spec = dataclasses.replace(simulate.SimulationSpec.tiny(), photons=3e4, background=0.5)
    truth_probe = simulate.zone_plate_probe(spec)
    scan = cxi.load_scan(simulate.write_scan(tmp_path / "dim.cxi", spec))
    assert scan.ground_truth is not None
    recon = epie.reconstruct(scan, probe_defocus_m=spec.resolved_defocus_m)
    pixelwise = cramer_rao.pixelwise_bound(scan.ground_truth, truth_probe, scan.positions_px)
    clean, with_background = (
        cramer_rao.whole_scan_bound(
            cramer_rao.FisherInformation(
                scan.ground_truth,
                truth_probe,
                scan.positions_px,
                background=background,
                fft_sign=spec.fft_sign,
            )
        )
        for background in (None, simulate.diffuse_background(spec))
    )
    error = quality.object_error(recon.object, scan.ground_truth, illumination=recon.illumination)
    assert pixelwise < clean < with_background < error
