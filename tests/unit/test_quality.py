"""Quality figures: registered object error, verdicts on error histories, output-file assessment."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from cosmic_dagster.ptycho import epie, quality, verdict


def _smooth_object(size: int = 96, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    spectrum = np.fft.fft2(rng.standard_normal((size, size)) + 1j * rng.standard_normal((size, size)))
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
    field = np.fft.ifft2(spectrum * np.exp(-((k / 0.08) ** 2)))
    field /= np.abs(field).std()
    return (np.exp(-0.2 * field.real) * np.exp(1j * field.imag)).astype(np.complex64)


def _centre_mask(size: int = 96, half: int = 24) -> np.ndarray:
    mask = np.zeros((size, size), bool)
    mask[size // 2 - half : size // 2 + half, size // 2 - half : size // 2 + half] = True
    return mask


def _fourier_shift(image: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    ky = np.fft.fftfreq(image.shape[0])[:, None]
    kx = np.fft.fftfreq(image.shape[1])[None, :]
    return np.fft.ifft2(np.fft.fft2(image) * np.exp(-2j * np.pi * (ky * shift[0] + kx * shift[1])))


@pytest.mark.parametrize(
    ("conjugated", "rotated"), [(False, False), (True, False), (False, True), (True, True)]
)
def test_registration_removes_factor_shift_and_twin(conjugated: bool, rotated: bool) -> None:
    truth = _smooth_object()
    recon = (0.7 - 0.4j) * _fourier_shift(truth, (3.3, -2.6))
    recon = np.conj(recon) if conjugated else recon
    recon = recon[::-1, ::-1] if rotated else recon
    found = quality.register(recon, truth, _centre_mask())
    assert found.error < 0.01
    assert (found.conjugated, found.rotated) == (conjugated, rotated)
    if not (conjugated or rotated):
        assert found.shift == pytest.approx((3.3, -2.6), abs=0.05)
        assert 1 / found.factor == pytest.approx(0.7 - 0.4j, abs=0.01)


def test_subpixel_registration_matters() -> None:
    truth = _smooth_object()
    recon = _fourier_shift(truth, (0.5, 0.5))
    with_subpixel = quality.register(recon, truth, _centre_mask()).error
    integer_only = quality.register(recon, truth, _centre_mask(), subpixel=False).error
    assert with_subpixel < 0.01 < integer_only


def test_unrelated_object_has_large_error() -> None:
    assert quality.object_error(_smooth_object(seed=1), _smooth_object(seed=2)) > 0.3


def test_error_counts_only_the_lit_region() -> None:
    truth = _smooth_object()
    recon = truth.copy()
    recon[:10] = 0  # damage outside the lit centre
    illumination = _centre_mask().astype(float)
    assert quality.object_error(recon, truth, illumination=illumination) < 1e-6
    assert quality.object_error(recon, truth) > 0.1


def test_an_unreconstructed_start_cannot_be_shifted_onto_a_blank_lit_region() -> None:
    """A garbage image of a blank scanned region: the error is the garbage's, not the error of the
    uniform start that a large shift would lay over the lit region."""
    truth = _smooth_object()
    truth[:48, :48] = 1  # the scan sees only blank sample
    illumination = np.zeros(truth.shape)
    illumination[12:36, 12:36] = 1
    recon = np.ones(truth.shape, np.complex64)  # the engine's start, untouched where unlit
    recon[8:40, 8:40] = _smooth_object(seed=3)[8:40, 8:40]
    assert quality.register(recon, truth, quality.lit_mask(illumination)).error < 1e-6
    assert quality.object_error(recon, truth, illumination=illumination) > 0.3


def test_the_true_illumination_scores_the_region_the_scan_lit() -> None:
    """A wrong probe that concentrates its light on a few pixels would be scored there alone."""
    truth = _smooth_object()
    true_illumination = _centre_mask().astype(float)
    recon = _smooth_object(seed=4)
    recon[44:52, 44:52] = truth[44:52, 44:52]  # right only under the wrong probe's hot spot
    illumination = 0.1 * true_illumination
    illumination[44:52, 44:52] = 1
    assert quality.object_error(recon, truth, illumination=illumination) < 1e-6
    scored = quality.object_error(
        recon, truth, illumination=illumination, true_illumination=true_illumination
    )
    assert scored > 0.3


def test_lit_mask_threshold() -> None:
    illumination = np.array([[0.0, 0.4], [0.6, 2.0]])
    np.testing.assert_array_equal(quality.lit_mask(illumination), [[False, False], [False, True]])
    np.testing.assert_array_equal(quality.lit_mask(illumination, 0.25), [[False, False], [True, True]])


def test_bad_arguments() -> None:
    truth = _smooth_object()
    with pytest.raises(ValueError, match="same shape"):
        quality.register(truth[:50], truth)
    with pytest.raises(ValueError, match="no pixel"):
        quality.register(truth, truth, np.zeros(truth.shape, bool))


def test_non_finite_reconstruction_has_infinite_error() -> None:
    truth = _smooth_object()
    recon = truth.copy()
    recon[5, 5] = np.nan
    assert quality.object_error(recon, truth) == math.inf


@pytest.mark.parametrize(
    ("history", "ok", "reason"),
    [
        ([0.1, 0.05, 0.02, 0.01], True, "fell 10.0x"),
        ([0.1, 0.05, 0.02, 0.09], False, "diverged"),
        ([0.1, 0.05, float("nan")], False, "non-finite Fourier error from iteration 3"),
        ([float("inf")], False, "non-finite"),
        # A small fall alone is no failure any more: a run that starts near the noise floor cannot
        # fall far (the model fit, judged with the scan, decides; see test_verdict.py).
        ([0.1, 0.09, 0.08], True, "fell 1.2x"),
        ([0.1], False, "too few"),
        ([], False, "too few"),
    ],
)
def test_history_verdict(history: list[float], ok: bool, reason: str) -> None:
    judged = verdict.judge(verdict.Signals(history, finite=True))
    assert judged.ok is ok
    assert reason in judged.reason


def test_verdict_thresholds_are_adjustable() -> None:
    signals = verdict.Signals([0.1, 0.01, 0.012], finite=True)
    assert verdict.judge(signals, verdict.Limits(max_rise=1.5)).ok
    assert not verdict.judge(signals, verdict.Limits(max_rise=1.1)).ok


def _recon(obj: np.ndarray, history: list[float]) -> epie.Reconstruction:
    illumination = np.zeros(obj.shape, np.float32)
    illumination[24:72, 24:72] = 1
    return epie.Reconstruction(
        object=obj,
        probe=np.ones((8, 8), np.complex64),
        fourier_error=history,
        illumination=illumination,
        positions_px=np.zeros((1, 2), np.int64),
    )


def test_assess_output_reads_the_file(tmp_path: Path) -> None:
    truth = _smooth_object()
    path = epie.write_output(tmp_path / "out.h5", _recon(2j * truth, [0.1, 0.02, 0.01]))
    result = quality.assess_output(path, truth=truth)
    assert result.finite and result.verdict.ok and result.iterations == 3
    assert result.fourier_error_drop == pytest.approx(10)
    assert result.object_error is not None and result.object_error < 1e-5
    assert quality.assess_output(path).object_error is None


def test_assess_output_flags_non_finite_values(tmp_path: Path) -> None:
    obj = _smooth_object()
    obj[3, 3] = np.inf
    path = epie.write_output(tmp_path / "out.h5", _recon(obj, [0.1, 0.02, 0.01]))
    result = quality.assess_output(path, truth=_smooth_object())
    assert not result.finite and not result.verdict.ok and result.object_error is None
    assert "NaN or infinity" in result.verdict.reason
