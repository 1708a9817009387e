"""How ePIE finishes the object on a low-dose scan: sweeps that average it over all frames, then the
Poisson-likelihood finish (cosmic_dagster.ptycho.likelihood) of the object and the probe, the probe
within its pupil; and, on a sparse 9-frame scan, which pixels the finish may leave free."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cosmic_dagster.ptycho import cxi, epie, likelihood, optics, quality, verdict
from cosmic_dagster.ptycho import simulate as sim
from cosmic_dagster.ptycho.simulate import SimulationSpec

#: Benchmark seed 18, case 68: 1.6e4 photons per 64² frame with read noise; its true defocus (in the
#: engine's convention: the patterns are mirrored).
LOW_DOSE = SimulationSpec(
    n_side=6, frame_size=64, step_px=9.92753192967186, jitter=0.1793510632142785,
    energy_ev=297.44363590990235, detector_pixel_m=0.00020617988739160713,
    defocus_m=1.737760888232945e-05, photons=16471.578740386416, seed=68, sample="particles",
    fft_sign=-1, translation_columns=2, background=0.008042763056829305, read_noise=0.19612148157827108,
)  # fmt: skip
LOW_DOSE_DEFOCUS_M = -1.737760888232945e-05


#: Benchmark seed 51, case 100, its 512² frames as 256² ones of twice the pixel (as the engine bins
#: them): a Siemens star under a 20-pixel beam, 9 frames of 1.3e5 photons. The probe's faint tails
#: light some 50,000 pixels of the object with under 10 photons each.
SPARSE = SimulationSpec(
    n_side=3, frame_size=256, step_px=5.784904275139007, jitter=0.08166099207336239,
    energy_ev=487.1618789435306, detector_pixel_m=7.083860401651259e-05, defocus_m=-6.1096430524212835e-06,
    photons=125500.98385271418, seed=100, sample="siemens_star", translation_columns=2,
    read_noise=0.25059828091150643,
)  # fmt: skip


@pytest.fixture(scope="module")
def low_dose(tmp_path_factory: pytest.TempPathFactory) -> cxi.ScanData:
    return cxi.load_scan(sim.write_scan(tmp_path_factory.mktemp("low") / "scan.cxi", LOW_DOSE))


@pytest.fixture(scope="module")
def unfinished(low_dose: cxi.ScanData) -> epie.Reconstruction:
    return epie.reconstruct(low_dose, probe_defocus_m=LOW_DOSE_DEFOCUS_M, likelihood_iterations=0)


def test_averaging_sweeps_lower_a_low_dose_object_error_and_never_raise_the_fit(
    low_dose: cxi.ScanData,
) -> None:
    """The averaged sweeps are error reduction with the probe held, so none raises the Fourier
    error, and the object, no longer shaped by the last frames alone, crosses the benchmark's 0.15."""
    plain, averaged = (
        epie.reconstruct(
            low_dose, probe_defocus_m=LOW_DOSE_DEFOCUS_M, average_iterations=n, likelihood_iterations=0
        )
        for n in (0, epie.DEFAULT_AVERAGE_ITERATIONS)
    )
    n = epie.DEFAULT_ITERATIONS
    assert averaged.fourier_error[:n] == plain.fourier_error
    assert len(averaged.fourier_error) == n + epie.DEFAULT_AVERAGE_ITERATIONS
    np.testing.assert_array_equal(averaged.probe, plain.probe)  # held
    tail = averaged.fourier_error[n:]
    assert all(later <= earlier * (1 + 1e-5) for earlier, later in itertools.pairwise(tail))
    assert _object_error(averaged, low_dose) <= 0.15 < _object_error(plain, low_dose)


def _object_error(recon: epie.Reconstruction, scan: cxi.ScanData) -> float:
    assert scan.ground_truth is not None
    return quality.object_error(recon.object, scan.ground_truth, illumination=recon.illumination)


def _lit(recon: epie.Reconstruction) -> np.ndarray:
    return recon.illumination >= 1e-3 * float(recon.illumination.max())


def _finish(
    recon: epie.Reconstruction,
    frames: np.ndarray,
    lit: np.ndarray | None = None,
    iterations: int = likelihood.DEFAULT_ITERATIONS,
) -> tuple[np.ndarray, float]:
    """:func:`likelihood.refine` from an engine's model (over its lit region by default), the
    probe held."""
    region = _lit(recon) if lit is None else lit
    finish = likelihood.refine(
        recon.object, recon.probe, frames, recon.positions_px, recon.illumination, region, None, iterations
    )
    return finish.object, finish.fourier_error


def _fit(scan: cxi.ScanData, obj: np.ndarray, recon: epie.Reconstruction, rates: bool) -> verdict.Fit:
    noise = verdict.read_noise_estimate(scan.frames)
    return verdict.model_fit(scan.frames, obj, recon.probe, recon.positions_px, None, noise, rates=rates)


def test_the_finish_keeps_the_photons_an_amplitude_fit_drops_and_improves_the_image(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    """At about a photon per pixel ePIE's amplitude fit holds ~0.95 of the measured photons (it fits
    E[√N] ≈ λ where counts are 0 or 1); the likelihood's model holds them all, and the image is
    nearer the truth."""
    refined, error = _finish(unfinished, low_dose.frames)
    before, after = (
        _fit(low_dose, unfinished.object, unfinished, False),
        _fit(low_dose, refined, unfinished, True),
    )
    assert before.intensity_balance < 0.96 and 0.98 < after.intensity_balance < 1.02
    assert error == pytest.approx(after.fourier_error, rel=1e-3)  # the engine's history counts it so
    assert (
        _object_error(replace(unfinished, object=refined), low_dose)
        < _object_error(unfinished, low_dose) - 0.005
    )


def test_the_finish_moves_only_lit_pixels(low_dose: cxi.ScanData, unfinished: epie.Reconstruction) -> None:
    lit = _lit(unfinished)
    lit[: lit.shape[0] // 2] = False  # pretend the upper half was never lit
    refined, _ = _finish(unfinished, low_dose.frames, lit, iterations=5)
    np.testing.assert_array_equal(refined[~lit], unfinished.object[~lit])
    assert not np.array_equal(refined[lit], unfinished.object[lit])


def test_counts_under_half_a_photon_are_read_noise(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    """Dark subtraction leaves ±0.4 photon of noise where no photon landed (0.26 rms, under
    ``COUNTING_NOISE``); the finish reads it as no photon at all."""
    counts = np.rint(np.maximum(low_dose.frames, 0))
    noise = np.random.default_rng(0).uniform(-0.45, 0.45, counts.shape) * (counts == 0)
    clean, _ = _finish(unfinished, counts, iterations=5)
    noisy, _ = _finish(unfinished, counts + noise, iterations=5)
    np.testing.assert_allclose(noisy, clean, atol=1e-6)


def test_read_noise_of_binned_pixels_is_modelled_not_cut(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    """A 2 x 2 bin of pixels with 0.37 photon rms of read noise holds 0.75: a cut at half a photon
    keeps much of the noise as photons, and the shifted Poisson model (N + s² read as a count of
    rate λ + s²) lands nearer the truth."""
    noisy = low_dose.frames + np.random.default_rng(1).normal(0, 0.75, low_dose.frames.shape)
    assert verdict.read_noise_estimate(noisy) > likelihood.COUNTING_NOISE
    modelled, _ = _finish(unfinished, noisy)
    cut, _ = _finish(unfinished, np.where(noisy < likelihood.ZERO_BELOW, 0, noisy))  # no negatives left
    assert _object_error(replace(unfinished, object=modelled), low_dose) < (
        _object_error(replace(unfinished, object=cut), low_dose) - 0.01
    )


@pytest.mark.parametrize("read_noise", [0.0, 0.75], ids=["counted", "shifted Poisson"])
def test_the_gradients_the_finish_follows_are_the_costs(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction, read_noise: float
) -> None:
    """Against central differences of the cost, along a random direction of the (lit) object and
    one of the probe, on frames read by either model of the counts."""
    rng = np.random.default_rng(2)
    frames = (
        low_dose.frames + rng.normal(0, read_noise, low_dose.frames.shape) if read_noise else low_dose.frames
    )
    lit = _lit(unfinished)
    corners = np.asarray(unfinished.positions_px).tolist()
    cost = likelihood.PoissonCost(frames, corners, np.ones(frames.shape[1:], np.float32), lit)
    obj, probe = unfinished.object, unfinished.probe
    _, to_object, to_probe = cost(obj, probe, with_probe=True)

    def direction(like: np.ndarray, size: float) -> np.ndarray:
        return (size * (rng.standard_normal(like.shape) + 1j * rng.standard_normal(like.shape))).astype(
            np.complex64
        )

    along_object = direction(obj, 1e-5) * lit
    along_probe = direction(probe, 1e-5 * float(np.abs(probe).max()))
    for gradient, step in ((to_object, (along_object, 0)), (to_probe, (0, along_probe))):
        ahead, behind = (cost(obj + sign * step[0], probe + sign * step[1])[0] for sign in (1, -1))
        assert (ahead - behind) / 2 == pytest.approx(
            float(np.vdot(gradient, step[0] + step[1]).real), rel=0.02
        )


def test_with_the_pupil_the_finish_refines_the_probe_within_it_and_the_image_gains(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    """ePIE's probe is fitted to amplitudes like its object; refined under the same likelihood (its
    far field kept inside the zone plate's pupil, where ePIE held it) the image lands nearer the
    truth than with that probe held."""
    pupil = epie._pupil(low_dose)
    lit = unfinished.illumination >= epie._AVERAGE_LIT_SHARE * float(unfinished.illumination.max())
    held, refined = (
        likelihood.refine(
            unfinished.object, unfinished.probe, low_dose.frames, unfinished.positions_px,
            unfinished.illumination, lit, None, likelihood.DEFAULT_ITERATIONS, cut,
        )
        for cut in (None, pupil)
    )  # fmt: skip
    np.testing.assert_array_equal(held.probe, unfinished.probe)
    far = np.abs(np.fft.fft2(refined.probe))
    assert not np.allclose(refined.probe, unfinished.probe, atol=1e-3 * float(np.abs(unfinished.probe).max()))
    assert float(far[pupil.real == 0].max()) < 1e-4 * float(far.max())

    def error(finish: likelihood.Finished) -> float:
        light = quality.illumination(finish.probe, unfinished.positions_px, low_dose.object_shape)
        return _object_error(replace(unfinished, object=finish.object, illumination=light), low_dose)

    assert error(refined) < error(held) - 0.005
    assert refined.fourier_error < held.fourier_error


def test_the_minimiser_finds_a_quadratics_minimum_whatever_its_scaling() -> None:
    """L-BFGS over complex arrays: Σ c|x - t|², with curvatures c over six orders of magnitude
    and the preconditioner only roughly right."""
    rng = np.random.default_rng(1)
    target = (rng.standard_normal((16, 16)) + 1j * rng.standard_normal((16, 16))).astype(np.complex64)
    curvature = (10 ** rng.uniform(-3, 3, (16, 16))).astype(np.float32)

    def cost(x: np.ndarray) -> tuple[float, np.ndarray]:
        return float(np.sum(curvature * np.abs(x - target) ** 2)), 2 * curvature * (x - target)

    rough = (1 / (2 * curvature * rng.uniform(0.3, 3, curvature.shape))).astype(np.float32)
    found, value = likelihood._minimise(cost, np.zeros_like(target), rough, 200)
    np.testing.assert_allclose(found, target, atol=1e-3)
    assert value == pytest.approx(cost(found)[0], abs=1e-6)


def test_a_likelihood_fit_is_judged_on_its_own_rates(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    """An amplitude fit's photons are judged with its low-count bias undone; a likelihood fit has
    none, so its rate balance is its intensity balance."""
    amplitude, rates = (_fit(low_dose, unfinished.object, unfinished, r) for r in (False, True))
    assert rates.rate_balance == rates.intensity_balance == amplitude.intensity_balance
    assert amplitude.rate_balance > amplitude.intensity_balance + 0.03


def test_the_engine_finishes_with_the_likelihood_and_holds_its_probe_to_the_pupil(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    finished = epie.reconstruct(low_dose, probe_defocus_m=LOW_DOSE_DEFOCUS_M)
    n = epie.DEFAULT_ITERATIONS + epie.DEFAULT_AVERAGE_ITERATIONS
    assert finished.fourier_error[:n] == unfinished.fourier_error and len(finished.fourier_error) == n + 1
    assert finished.params["likelihood_iterations"] == epie.DEFAULT_LIKELIHOOD_ITERATIONS
    outside = epie._pupil(low_dose).real == 0
    far = np.abs(np.fft.fft2(finished.probe))
    assert outside.any() and float(far[outside].max()) < 1e-4 * float(far.max())
    judged = quality.assess(
        low_dose, finished.object, finished.probe, finished.positions_px, finished.fourier_error,
        finished.illumination, rates=True,
    )  # fmt: skip
    assert judged.verdict.ok, judged.verdict.reason


def test_a_finish_without_light_or_iterations_changes_nothing(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    for lit, iterations in ((np.zeros_like(_lit(unfinished)), 60), (_lit(unfinished), 0)):
        refined, error = _finish(unfinished, low_dose.frames, lit, iterations)
        np.testing.assert_array_equal(refined, unfinished.object)
        assert error == pytest.approx(
            _fit(low_dose, unfinished.object, unfinished, True).fourier_error, rel=1e-3
        )


def test_the_pupil_is_the_beams_cone_whatever_pixels_the_detector_lost(tmp_path: Path) -> None:
    """The mean pattern is dark on bad pixels and on a dead column; a pupil cut where it is dark
    would cut the beam's cone and leave a model that cannot fit the data (a first version did)."""
    spec = dataclasses.replace(SimulationSpec.tiny(), bad_pixel_fraction=0.01)  # a dead column too
    scan = cxi.load_scan(sim.write_scan(tmp_path / "scan.cxi", spec))
    assert scan.bad_pixels is not None and scan.bad_pixels.all(axis=0).any()
    pupil = np.fft.fftshift(epie._pupil(scan).real > 0)
    cone = optics.zone_plate_pupil(spec.frame_size, spec.pupil_radius_px, 0.0) > 0
    assert pupil[cone].all() and pupil.sum() <= 1.3 * cone.sum()


def test_a_finished_output_is_judged_as_a_likelihood_fit_when_read_back(
    low_dose: cxi.ScanData, tmp_path: Path
) -> None:
    """The asset check re-reads the engine's output: it must judge the photons as the job did."""
    finished = epie.reconstruct(low_dose, probe_defocus_m=LOW_DOSE_DEFOCUS_M, likelihood_iterations=10)
    path = epie.write_output(tmp_path / "out.h5", finished)
    as_rates, as_amplitudes = (
        quality.assess(
            low_dose, finished.object, finished.probe, finished.positions_px, finished.fourier_error,
            finished.illumination, rates=rates,
        ).verdict
        for rates in (True, False)
    )  # fmt: skip
    assert as_rates != as_amplitudes  # the two readings differ on this scan ...
    assert quality.assess_output(path, scan=low_dose).verdict == as_rates  # ... and the output says which


def _finishes(
    scan: cxi.ScanData, defocus_m: float
) -> tuple[likelihood.Finished, likelihood.Finished, Callable[[likelihood.Finished], float]]:
    """The free finish (:func:`likelihood.refine`) and the engine's (:func:`likelihood.finish`) of
    ePIE's model of ``scan``, as the engine runs them, and the object error of either."""
    unfinished = epie.reconstruct(scan, probe_defocus_m=defocus_m, likelihood_iterations=0)
    light = unfinished.illumination
    lit = light >= epie._AVERAGE_LIT_SHARE * float(light.max())
    arguments = (
        unfinished.object, unfinished.probe, scan.frames, unfinished.positions_px, light, lit, None,
        likelihood.DEFAULT_ITERATIONS, epie._pupil(scan),
    )  # fmt: skip

    def error(finish: likelihood.Finished) -> float:
        lit_by = quality.illumination(finish.probe, unfinished.positions_px, scan.object_shape)
        return _object_error(replace(unfinished, object=finish.object, illumination=lit_by), scan)

    return likelihood.refine(*arguments), likelihood.finish(*arguments), error


def test_pixels_too_dim_to_be_unknowns_are_held_where_freeing_them_fits_the_noise(tmp_path: Path) -> None:
    """Free, the dim pixels let the model explain the counts better than the image's photons allow
    (the likelihood's gain is under the unknowns they add) and the image is wrong (0.215); held at
    the well-lit object's mean, it is right (0.100)."""
    scan = cxi.load_scan(sim.write_scan(tmp_path / "scan.cxi", SPARSE))
    free, chosen, error = _finishes(scan, SPARSE.defocus_m)
    assert chosen.held_dim and not free.held_dim
    assert free.cost < chosen.cost  # the free model fits the counts better ...
    assert error(chosen) < 0.15 < 0.2 < error(free)  # ... and is the wrong image


def test_dim_pixels_stay_free_where_they_explain_what_the_model_has_no_term_for(tmp_path: Path) -> None:
    """Heavy air scatter (30 % of the photons, falling from the beam's centre) has no term in the
    model; the dim pixels' scattering fits it, by far more than the unknowns they add."""
    spec = dataclasses.replace(SPARSE, background=0.3 * SPARSE.photons / SPARSE.frame_size**2)
    scan = cxi.load_scan(sim.write_scan(tmp_path / "scan.cxi", spec))
    free, chosen, _ = _finishes(scan, SPARSE.defocus_m)
    assert not chosen.held_dim
    np.testing.assert_array_equal(chosen.object, free.object)


def test_a_finish_of_a_scan_without_dim_pixels_is_the_free_one(
    low_dose: cxi.ScanData, unfinished: epie.Reconstruction
) -> None:
    bright = unfinished.illumination >= likelihood.DIM_PIXEL_PHOTONS
    arguments = (
        unfinished.object, unfinished.probe, low_dose.frames, unfinished.positions_px,
        unfinished.illumination, bright, None, 5,
    )  # fmt: skip
    free, chosen = likelihood.refine(*arguments), likelihood.finish(*arguments)
    assert not chosen.held_dim
    np.testing.assert_array_equal(chosen.object, free.object)
