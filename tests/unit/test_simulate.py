"""Simulator: COSMIC names and layout, determinism, atomic appearance, beamline pacing, defects."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from dataclasses import replace
from pathlib import Path

import h5py
import numpy as np
import pytest

from cosmic_dagster.ptycho import cxi, layout, optics, simulate
from cosmic_dagster.ptycho.simulate import SimulationSpec

DAY = dt.date(2023, 2, 16)


def test_cosmic_names() -> None:
    assert simulate.cosmic_filename(DAY, 33) == "NS_230216033_ccdframes_0_0.cxi"
    assert simulate.cosmic_filename(DAY, 7, energy_index=2, region=1) == "NS_230216007_ccdframes_2_1.cxi"
    assert simulate.cosmic_relpath(DAY, 33) == "2023/02/230216/NS_230216033_ccdframes_0_0.cxi"


@pytest.mark.parametrize(("number", "energy", "region"), [(1000, 0, 0), (-1, 0, 0), (1, -1, 0), (1, 0, -1)])
def test_cosmic_names_reject_bad_numbers(number: int, energy: int, region: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        simulate.cosmic_filename(DAY, number, energy, region)


def test_presets() -> None:
    tiny, demo, realistic = SimulationSpec.tiny(), SimulationSpec.demo(), SimulationSpec.realistic()
    assert (tiny.n_positions, tiny.frame_size) == (16, 64)
    assert (demo.n_positions, demo.frame_size) == (64, 128)
    assert (realistic.n_positions, realistic.frame_size) == (2500, 256)
    # All presets sample the sample plane alike (~24 nm) and keep the probe cone inside the frame.
    for spec in (tiny, demo, realistic):
        assert spec.object_pixel_m == pytest.approx(24.4e-9, rel=0.01)
        assert spec.pupil_radius_px < spec.frame_size / 2
    assert demo.resolved_defocus_m == pytest.approx(15e-6 * 800 / 700)
    assert SimulationSpec.tiny(seed=5).seed == 5


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"n_side": 1}, "n_side"),
        ({"frame_size": 63}, "frame_size"),
        ({"photons": 0}, "photons"),
        ({"jitter": 0.5}, "jitter"),
        ({"frame_size": 32}, "probe cone"),
        ({"defocus_m": -100e-6}, "beam .141 px across. does not fit in the 128 px field of view"),
    ],
)
def test_spec_rejects_bad_values(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationSpec(**changes)


def _datasets(path: Path) -> dict[str, np.ndarray]:
    names = [layout.FRAMES, layout.TRANSLATION, layout.PROBE_GUESS_PATHS[0], layout.GROUND_TRUTH_OBJECT]
    with h5py.File(path, "r") as f:
        return {name: f[name][()] for name in names}


def test_same_seed_same_data_other_seed_other_data(tmp_path: Path) -> None:
    a = _datasets(simulate.write_scan(tmp_path / "a.cxi", SimulationSpec.tiny(seed=3)))
    b = _datasets(simulate.write_scan(tmp_path / "b.cxi", SimulationSpec.tiny(seed=3)))
    c = _datasets(simulate.write_scan(tmp_path / "c.cxi", SimulationSpec.tiny(seed=4)))
    for name in a:
        np.testing.assert_array_equal(a[name], b[name])
    assert not np.array_equal(a[layout.FRAMES], c[layout.FRAMES])
    assert not np.array_equal(a[layout.TRANSLATION], c[layout.TRANSLATION])


def test_paced_and_unpaced_writes_give_the_same_data(tmp_path: Path) -> None:
    spec = SimulationSpec.tiny(seed=1)
    fast = _datasets(simulate.write_scan(tmp_path / "fast.cxi", spec))
    paced = _datasets(simulate.write_scan(tmp_path / "paced.cxi", spec, frame_rate_hz=1000))
    np.testing.assert_array_equal(fast[layout.FRAMES], paced[layout.FRAMES])


def test_cosmic_layout_and_units(tmp_path: Path) -> None:
    spec = SimulationSpec.tiny()
    path = simulate.write_scan(tmp_path / "NS_230216001_ccdframes_0_0.cxi", spec)
    with h5py.File(path, "r") as f:
        frames = f[layout.FRAMES]
        assert frames.shape == (16, 64, 64) and frames.dtype == np.float32
        assert frames.chunks == (1, 64, 64) and frames.maxshape == (None, 64, 64)
        assert frames.compression == "lzf" and frames.attrs["axes"] == "translation:y:x"
        assert f.get(layout.FRAMES_LINK, getlink=True).path == layout.FRAMES
        for link in layout.TRANSLATION_LINKS:
            assert f.get(link, getlink=True).path == layout.TRANSLATION
        translation = f[layout.TRANSLATION][()]
        assert translation.shape == (16, 3) and np.all(translation[:, 2] == 0)
        assert 0 < np.abs(translation[:, :2]).max() < 5e-6  # metres: a few µm of scan
        assert f[layout.ENERGY_J][()] == pytest.approx(800 * 1.602176634e-19)
        assert f[layout.DISTANCE_M][()] == pytest.approx(0.121)
        assert f[layout.X_PIXEL_SIZE_M][()] == f[layout.Y_PIXEL_SIZE_M][()] == pytest.approx(120e-6)
        assert f[layout.VERSION][()] == 140
        assert not f[layout.MASK][()].any() and f[layout.MASK].dtype == np.uint32
        metadata = json.loads(f[layout.METADATA][()])
        assert metadata["energy"] == 800 and metadata["geometry"]["distance"] == pytest.approx(121)
        guesses = [f[p][()] for p in layout.PROBE_GUESS_PATHS]
        assert all(np.array_equal(guesses[0], g) for g in guesses)
        # acme's guess: inverse transform of the root mean pattern, i.e. no phase in the far field.
        spectrum = optics.centred_fft2(guesses[0])
        assert np.abs(spectrum.imag).max() < 1e-3 * np.abs(spectrum).max()
        truth = f[layout.GROUND_TRUTH_OBJECT]
        assert truth.shape == (spec.object_size,) * 2 and truth.dtype == np.complex64
        assert not layout.GROUND_TRUTH_OBJECT.startswith((layout.DETECTOR, layout.SOURCE, layout.GEOMETRY))


def test_probe_is_a_defocused_ring_scaled_to_the_photon_count() -> None:
    spec = SimulationSpec.demo()
    probe = simulate.zone_plate_probe(spec)
    assert np.sum(np.abs(probe) ** 2) == pytest.approx(spec.photons, rel=1e-3)
    focused = simulate.zone_plate_probe(SimulationSpec(defocus_m=0.0))
    # Defocus spreads the light: the peak drops and the spot widens.
    assert np.abs(probe).max() < 0.5 * np.abs(focused).max()
    refocused = optics.propagate(
        probe, (spec.object_pixel_m,) * 2, spec.wavelength_m, -spec.resolved_defocus_m
    )
    np.testing.assert_allclose(np.abs(refocused), np.abs(focused), atol=1e-3 * np.abs(focused).max())


def test_write_is_atomic(tmp_path: Path) -> None:
    final = tmp_path / "day" / "NS_230216002_ccdframes_0_0.cxi"
    tmp = final.with_name(final.name + ".tmp")
    writer = threading.Thread(
        target=simulate.write_scan, args=(final, SimulationSpec.tiny()), kwargs={"frame_rate_hz": 40}
    )
    writer.start()
    seen_partial = False
    while writer.is_alive():
        # final first: the rename may fall between the two looks, but a final seen before a tmp
        # means both existed at once (a final, once there, stays)
        final_seen = final.exists()
        if tmp.exists():
            seen_partial = True
            assert not final_seen
        time.sleep(0.005)
    writer.join()
    assert seen_partial
    assert final.exists() and not tmp.exists()
    assert cxi.read_summary(final).n_frames == 16


def test_failed_write_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = simulate.diffraction, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) > 2:
            raise RuntimeError("detector died")
        return real(*args, **kwargs)

    monkeypatch.setattr(simulate, "diffraction", failing)
    with pytest.raises(RuntimeError, match="detector died"):
        simulate.write_scan(tmp_path / "x.cxi", SimulationSpec.tiny(), frame_rate_hz=1000)
    assert list(tmp_path.iterdir()) == []


def test_beamline_writes_scans_one_after_another(tmp_path: Path) -> None:
    day = dt.date(2024, 1, 5)
    scans = simulate.simulate_beamline(tmp_path, 3, 0.05, SimulationSpec.tiny(), day=day, first_scan_number=7)
    first = next(scans)
    assert list(tmp_path.rglob("*.cxi")) == [first]  # lazy: one scan per step
    paths = [first, *scans]
    assert [p.relative_to(tmp_path).as_posix() for p in paths] == [
        f"2024/01/240105/NS_240105{n:03d}_ccdframes_0_0.cxi" for n in (7, 8, 9)
    ]
    frames = [_datasets(p)[layout.FRAMES] for p in paths]
    assert not np.array_equal(frames[0], frames[1])  # each scan has its own seed
    assert not list(tmp_path.rglob("*.tmp"))


def test_beamline_rejects_negative_interval(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        next(simulate.simulate_beamline(tmp_path, 1, -1, SimulationSpec.tiny()))


def test_unknown_defect_kind(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown defect kind 'nope'"):
        simulate.write_defect(tmp_path / "x.cxi", "nope")


def test_demo_file_is_a_few_megabytes(tmp_path: Path) -> None:
    path = simulate.write_scan(tmp_path / "demo.cxi", SimulationSpec.demo())
    assert 1e6 < path.stat().st_size < 8e6


@pytest.mark.parametrize("sample", simulate.SAMPLE_KINDS)
def test_every_sample_kind_is_a_transmission(sample: str) -> None:
    spec = SimulationSpec(sample=sample)
    obj = simulate.sample_object(spec, np.random.default_rng(0))
    assert obj.shape == (spec.object_size,) * 2 and obj.dtype == np.complex64
    amplitude = np.abs(obj)
    assert amplitude.max() <= 1 + 1e-6 and amplitude.std() > 0.01  # absorbs, and has structure
    assert np.angle(obj).std() > 0.01


def test_the_star_is_area_sampled_so_its_centre_is_not_pixel_noise(monkeypatch: pytest.MonkeyPatch) -> None:
    """Point-sampled, the spokes narrower than a pixel at the centre alias into noise (0.32 rms
    against a fine area average); each pixel holds the share of it that a spoke covers instead."""
    n = 128
    y, x = np.indices((n, n), dtype=np.float64) - (n - 1) / 2
    star = simulate._star(n, y, x)
    centre = np.hypot(y, x) < 8
    monkeypatch.setattr(simulate, "STAR_SUBSAMPLES", 16)
    fine = simulate._star(n, y, x)
    point = (np.sin(16 * np.arctan2(y, x)) > 0) & (np.hypot(y, x) < 0.4 * n)

    def centre_noise(thickness: np.ndarray) -> float:
        return float(np.sqrt(np.mean((thickness - fine)[centre] ** 2)))

    graded = np.mean((star > 0) & (star < 1))
    assert star.min() >= 0 and star.max() <= 1 and 0.05 < graded < 0.5
    assert centre_noise(star) < 0.1 and centre_noise(point) > 0.25


def test_fft_sign_mirrors_the_patterns(tmp_path: Path) -> None:
    """The other FFT convention gives every pattern mirrored through the centre (the same physics)."""
    spec = SimulationSpec.tiny()
    forward = cxi.load_scan(simulate.write_scan(tmp_path / "f.cxi", spec)).frames
    inverse = cxi.load_scan(simulate.write_scan(tmp_path / "i.cxi", replace(spec, fft_sign=-1))).frames
    mirrored = np.roll(forward[:, ::-1, ::-1], 1, axis=(1, 2))

    # Same photons, other draws of the noise: compare the frames by correlation.
    def correlation(a: np.ndarray, b: np.ndarray) -> float:
        return float(np.corrcoef(a.ravel(), b.ravel())[0, 1])

    assert correlation(inverse, mirrored) > 0.99
    assert correlation(inverse, forward) < correlation(inverse, mirrored) - 0.02


def test_detector_effects_and_two_column_translations(tmp_path: Path) -> None:
    plain = SimulationSpec.tiny()
    spec = replace(
        plain, bad_pixel_fraction=0.01, dark_frames=10, read_noise=0.3, background=0.5, translation_columns=2
    )
    path = simulate.write_scan(tmp_path / "NS_230216001_ccdframes_0_0.cxi", spec)
    with h5py.File(path, "r") as f:
        assert f[layout.TRANSLATION].shape == (16, 2)
        mask = f[layout.MASK][()]
    scan = cxi.load_scan(path)
    assert scan.bad_pixels is not None and scan.bad_pixels.sum() == np.count_nonzero(mask) >= 64
    assert (mask.astype(bool).sum(axis=0) == 64).any()  # a dead column
    assert (scan.frames < 0).any()  # dark subtraction leaves read noise around zero
    assert scan.frames[:, scan.bad_pixels].max() == pytest.approx(6e4)  # hot pixels, masked
    # The diffuse background adds its 0.5 photons per pixel on average.
    without = cxi.load_scan(simulate.write_scan(tmp_path / "plain.cxi", plain)).frames
    usable = ~scan.bad_pixels
    added = float(scan.frames[:, usable].mean() - without[:, usable].mean())
    assert added == pytest.approx(0.5, abs=0.15)


@pytest.mark.parametrize(
    ("changes", "message"), [({"sample": "cat"}, "sample"), ({"fft_sign": 0}, "fft_sign")]
)
def test_spec_rejects_unknown_kinds(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        SimulationSpec(**changes)
