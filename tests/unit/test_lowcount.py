"""Low-count scans: detector binning under a small beam, and the Poisson score of the auto-focus."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from cosmic_dagster.ptycho import cxi, epie, lowcount, optics, quality, simulate, verdict
from cosmic_dagster.ptycho.simulate import SimulationSpec

NAME = "NS_230216033_ccdframes_0_0.cxi"

#: 25 frames of 256² at 1e4 photons each (about one photon per pixel of the beam's cone) under a
#: 16 px beam: the benchmark's case that ePIE on the full frames gets wrong (object error 0.22).
LOW_COUNT = SimulationSpec(
    n_side=5, frame_size=256, step_px=4.18, jitter=0.002, energy_ev=1680.8, detector_pixel_m=17.4e-6,
    defocus_m=19.6e-6, photons=1.02e4, seed=102, sample="particles", bad_pixel_fraction=0.002,
    background=0.0016,
)  # fmt: skip


@pytest.fixture(scope="module")
def low_count(tmp_path_factory: pytest.TempPathFactory) -> cxi.ScanData:
    return cxi.load_scan(simulate.write_scan(tmp_path_factory.mktemp("low") / NAME, LOW_COUNT))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> cxi.ScanData:
    return cxi.load_scan(simulate.write_scan(tmp_path_factory.mktemp("tiny") / NAME, SimulationSpec.tiny()))


def test_binning_keeps_every_photon_and_scales_bins_with_a_few_bad_pixels(low_count: cxi.ScanData) -> None:
    assert low_count.probe_guess is not None
    clean = replace(low_count, bad_pixels=None)
    binned = lowcount.BinnedFrames(clean).scan(4, low_count.probe_guess)
    assert binned.frames.shape == (25, 64, 64) and binned.bad_pixels is None
    assert np.isclose(binned.frames.sum(), low_count.frames.sum(), rtol=1e-5)
    np.testing.assert_allclose(binned.positions_px, low_count.positions_px + 96)
    assert binned.object_pixel_size_m == low_count.object_pixel_size_m
    # Bins are centred on the DC pixel (128): bin 32 holds pixels 126-129, bin 3 pixels 10-13.
    mask = np.zeros((256, 256), bool)
    mask[126:130, 126:129] = True  # 12 of the DC bin's 16 pixels
    mask[10, 10] = True  # 1 of 16
    masked = lowcount.BinnedFrames(replace(low_count, bad_pixels=mask)).scan(4, low_count.probe_guess)
    assert masked.bad_pixels is not None and np.argwhere(masked.bad_pixels).tolist() == [[32, 32]]
    good = ~mask[10:14, 10:14]
    np.testing.assert_allclose(
        masked.frames[:, 3, 3], low_count.frames[:, 10:14, 10:14][:, good].sum(axis=1) * 16 / 15, rtol=1e-5
    )
    np.testing.assert_allclose(masked.frames[:, 5, 5], binned.frames[:, 5, 5])


def test_a_binned_model_predicts_the_binned_counts(low_count: cxi.ScanData) -> None:
    """The binned far field of a compact exit wave is that of its centre in the smaller field of
    view, to the half-pixel offset of the bins (the ramp) and a few per cent (the bins integrate
    the far field the model samples)."""
    n, factor = 256, 4
    y, x = np.indices((n, n)) - n // 2
    rng = np.random.default_rng(1)
    sample = np.exp(1j * rng.normal(0, 0.5, (n, n))) * (1 + 0.3 * rng.normal(size=(n, n)))
    exit_wave = (np.hypot(y, x) < 8) * sample
    counts = np.abs(optics.centred_fft2(exit_wave)) ** 2
    scan = replace(
        low_count, frames=counts[None].astype(np.float32), positions_px=np.zeros((1, 2)), bad_pixels=None
    )
    binned = lowcount.BinnedFrames(scan).scan(factor, exit_wave.astype(np.complex64))
    assert binned.probe_guess is not None

    def mismatch(guess: np.ndarray) -> float:
        model = np.abs(optics.centred_fft2(guess)) ** 2
        return float(np.linalg.norm(model - binned.frames[0]) / np.linalg.norm(binned.frames[0]))

    crop = exit_wave[96:160, 96:160]
    wrong_way = crop * np.exp(-1j * np.pi * (y[96:160, 96:160] + x[96:160, 96:160]) / n)
    assert mismatch(binned.probe_guess) < 0.03 < mismatch(crop) < mismatch(wrong_way)
    back = lowcount.unbin_probe(binned.probe_guess, (n, n))
    np.testing.assert_allclose(back[96:160, 96:160], crop, atol=1e-5)
    assert not back[:96].any() and not back[:, 160:].any()


def test_binning_only_where_counts_are_low_and_the_beam_is_small(
    tiny: cxi.ScanData, low_count: cxi.ScanData
) -> None:
    tiny_cone = lowcount.measure_cone(tiny)
    assert not tiny_cone.low_count and lowcount.binning_factor(tiny, tiny_cone, 15e-6) == 1
    cone = lowcount.measure_cone(low_count)
    assert abs(cone.radius_px - LOW_COUNT.pupil_radius_px) < 2
    assert cone.low_count and cone.photons_per_px < 2
    beam = lowcount.beam_diameter_px(low_count, cone, LOW_COUNT.defocus_m or 0)
    assert LOW_COUNT.beam_diameter_px < beam < LOW_COUNT.beam_diameter_px + 8  # plus the focal spot
    # The 4 x 4 the counts ask for (a 64 px field of view, 3.1 beams wide) ...
    assert lowcount.binning_factor(low_count, cone, 19.6e-6) == 4
    # ... but 2 x 2 for a 25 px beam (64 px would hold 2.6 beams, 128 px hold 5) ...
    assert lowcount.binning_factor(low_count, cone, 25e-6) == 2
    # ... and none for a 54 px beam (2.4 beams in 128 px)
    assert lowcount.binning_factor(low_count, cone, 60e-6) == 1


def test_the_poisson_deviance_is_not_fooled_by_a_model_that_lost_photons() -> None:
    """At 0.3 photon per pixel the amplitude error prefers a model holding 60 % of the photons;
    the deviance prefers the true one."""
    rng = np.random.default_rng(3)
    n = 64
    probe = (rng.normal(size=(n, n)) + 1j * rng.normal(size=(n, n))).astype(np.complex64)
    obj = np.ones((n, n), np.complex64)
    rate = np.abs(np.fft.fft2(probe, norm="ortho")) ** 2
    probe *= np.sqrt(0.3 / rate.mean())
    counts = np.fft.fftshift(rng.poisson(0.3 / rate.mean() * rate, (40, n, n)), axes=(-2, -1)).astype(
        np.float32
    )
    positions = np.zeros((40, 2))
    dim = probe * np.float32(np.sqrt(0.6))
    assert (
        verdict.model_fit(counts, obj, dim, positions).fourier_error
        < verdict.model_fit(counts, obj, probe, positions).fourier_error
    )
    assert verdict.poisson_deviance(counts, obj, probe, positions) < verdict.poisson_deviance(
        counts, obj, dim, positions
    )


def test_a_low_count_scan_is_binned_and_reconstructs(
    low_count: cxi.ScanData, monkeypatch: pytest.MonkeyPatch
) -> None:
    recon = epie.reconstruct(low_count)
    assert recon.params["detector_binning"] in (2, 4) and recon.probe.shape == (256, 256)
    assert recon.focus is not None and "Poisson deviance" in recon.focus.reason
    assert recon.focus.defocus_m > 0  # the right sign
    assert low_count.ground_truth is not None
    error = quality.object_error(recon.object, low_count.ground_truth, illumination=recon.illumination)
    assert error <= 0.15
    monkeypatch.setattr(lowcount, "TARGET_PHOTONS_PER_PIXEL", 0.0)  # binning off, same defocus
    full = epie.reconstruct(low_count, probe_defocus_m=recon.focus.defocus_m)
    assert full.params["detector_binning"] == 1
    assert (
        quality.object_error(full.object, low_count.ground_truth, illumination=full.illumination)
        > error + 0.05
    )
