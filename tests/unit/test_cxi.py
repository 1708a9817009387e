"""CXI reader/validator: one specific error per defect, a faithful summary, bounded-memory validation."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from cosmic_dagster.ptycho import cxi, layout, simulate

NAME = "NS_230216033_ccdframes_0_0.cxi"

DEFECT_ERRORS = {
    "zero_bytes": cxi.EmptyFileError,
    "not_hdf5": cxi.NotHdf5Error,
    "truncated": cxi.TruncatedFileError,
    "not_cxi": cxi.MissingDatasetError,
    "missing_dataset": cxi.MissingDatasetError,
    "count_mismatch": cxi.CountMismatchError,
    "non_finite": cxi.NonFiniteError,
    "bad_shape": cxi.BadShapeError,
    "bad_dtype": cxi.BadDtypeError,
    "bad_value": cxi.BadValueError,
}
DEFECT_DATASETS = {
    "not_cxi": layout.FRAMES,
    "missing_dataset": layout.DISTANCE_M,
    "count_mismatch": layout.TRANSLATION,
    "non_finite": layout.FRAMES,
    "bad_shape": layout.FRAMES,
    "bad_dtype": layout.FRAMES,
    "bad_value": layout.ENERGY_J,
}


@pytest.fixture
def tiny(tmp_path: Path) -> Path:
    return simulate.write_scan(tmp_path / NAME, simulate.SimulationSpec.tiny())


def test_every_defect_kind_is_covered() -> None:
    assert set(DEFECT_ERRORS) == set(simulate.DEFECT_KINDS)


@pytest.mark.parametrize("kind", sorted(DEFECT_ERRORS))
def test_defect_raises_its_specific_error(tmp_path: Path, kind: str) -> None:
    path = simulate.write_defect(tmp_path / NAME, kind)
    assert [p.name for p in tmp_path.iterdir()] == [NAME]  # appeared atomically, no .tmp left
    for read in (cxi.read_summary, cxi.load_scan):
        with pytest.raises(cxi.CxiError) as info:
            read(path)
        assert type(info.value) is DEFECT_ERRORS[kind]
        assert str(info.value).startswith(NAME)
        if kind in DEFECT_DATASETS:
            assert info.value.dataset == DEFECT_DATASETS[kind]
            assert DEFECT_DATASETS[kind] in str(info.value)


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(cxi.MissingFileError, match="no such file"):
        cxi.read_summary(tmp_path / NAME)
    (tmp_path / "dir.cxi").mkdir()
    with pytest.raises(cxi.MissingFileError, match="not a regular file"):
        cxi.read_summary(tmp_path / "dir.cxi")


def _edit(path: Path, name: str, value: np.ndarray | float) -> None:
    with h5py.File(path, "r+") as f:
        del f[name]
        f[name] = value


def test_translation_with_wrong_columns_is_bad_shape(tiny: Path) -> None:
    _edit(tiny, layout.TRANSLATION, np.zeros((16, 4)))
    with pytest.raises(cxi.BadShapeError, match=r"\(16, 4\)"):
        cxi.read_summary(tiny)


def test_probe_guess_of_other_size_is_bad_shape(tiny: Path) -> None:
    _edit(tiny, layout.PROBE_GUESS_PATHS[0], np.ones((32, 32), np.complex64))
    with pytest.raises(cxi.BadShapeError) as info:
        cxi.read_summary(tiny)
    assert info.value.dataset == layout.PROBE_GUESS_PATHS[0]


def test_energy_in_ev_instead_of_joules_is_bad_value(tiny: Path) -> None:
    _edit(tiny, layout.ENERGY_J, 800.0)
    with pytest.raises(cxi.BadValueError, match="800 J"):
        cxi.read_summary(tiny)


@pytest.mark.parametrize(
    "name", [layout.TRANSLATION, layout.GROUND_TRUTH_OBJECT, layout.PROBE_GUESS_PATHS[0]]
)
def test_non_finite_small_datasets(tiny: Path, name: str) -> None:
    with h5py.File(tiny, "r") as f:
        data = f[name][()]
    data[1, 1] = np.inf
    _edit(tiny, name, data)
    with pytest.raises(cxi.NonFiniteError) as info:
        cxi.read_summary(tiny, check_frames=False)
    assert info.value.dataset == name


def test_corrupt_frame_chunk_is_unreadable(tiny: Path) -> None:
    with h5py.File(tiny, "r") as f:
        chunk = f[layout.FRAMES].id.get_chunk_info(3)
    with tiny.open("r+b") as fh:
        fh.seek(chunk.byte_offset)
        fh.write(b"\xff" * chunk.size)
    with pytest.raises(cxi.UnreadableFileError, match=r"frames 0\.\.15 cannot be read"):
        cxi.read_summary(tiny)


def test_hdf5_with_user_block_is_recognised(tmp_path: Path, tiny: Path) -> None:
    shifted = tmp_path / "with_userblock.cxi"
    with h5py.File(tiny, "r") as src, h5py.File(shifted, "w", userblock_size=1024) as dst:
        for name in src:
            src.copy(src[name], dst, name=name)
    assert cxi.read_summary(shifted).n_frames == 16


def test_errors_survive_pickling() -> None:
    error = cxi.NonFiniteError("/data/x.cxi", "frame 3 contains NaN", layout.FRAMES)
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is cxi.NonFiniteError
    assert str(copy) == str(error) == f"x.cxi {layout.FRAMES}: frame 3 contains NaN"


def test_summary_reports_geometry_in_si_units(tiny: Path) -> None:
    spec = simulate.SimulationSpec.tiny()
    s = cxi.read_summary(tiny)
    assert (s.n_frames, s.frame_shape, s.dtype) == (16, (64, 64), "float32")
    assert s.energy_ev == pytest.approx(800.0)
    assert s.wavelength_m == pytest.approx(1.5498e-9, rel=1e-4)
    assert s.distance_m == pytest.approx(0.121)
    assert s.pixel_size_m == pytest.approx((120e-6, 120e-6))
    assert s.object_pixel_size_m == pytest.approx((spec.object_pixel_m,) * 2)
    # 4 x 4 raster, step 6 px +- 25 % jitter, in µm
    step_um = spec.step_px * spec.object_pixel_m * 1e6
    assert 2 * step_um < s.scan_extent_um[0] < 4 * step_um
    assert 2 * step_um < s.scan_extent_um[1] < 4 * step_um
    assert s.has_probe_guess and s.has_ground_truth and s.has_mask and s.masked_pixels == 0
    assert s.cxi_version == 140 and s.frames_checked
    assert s.mean_counts_per_frame is not None and 0.3 * spec.photons < s.mean_counts_per_frame < spec.photons
    assert s.file_bytes == tiny.stat().st_size


def test_metadata_is_flat_json_with_units(tiny: Path) -> None:
    meta = cxi.read_summary(tiny).to_metadata()
    assert json.loads(json.dumps(meta)) == meta
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())
    assert meta["frames"] == 16 and meta["frame_shape"] == "64x64" and meta["file"] == NAME
    assert meta["energy_eV"] == 800.0 and meta["detector_pixel_um"] == 120.0
    assert meta["object_pixel_nm"] == pytest.approx(24.417, abs=1e-3)
    assert {"scan_width_um", "scan_height_um", "probe_guess", "ground_truth", "mean_counts_per_frame"} <= set(
        meta
    )


def test_metadata_only_check_skips_frames(tmp_path: Path) -> None:
    path = simulate.write_defect(tmp_path / NAME, "non_finite")
    s = cxi.read_summary(path, check_frames=False)
    assert not s.frames_checked and s.mean_counts_per_frame is None
    assert "mean_counts_per_frame" not in s.to_metadata()


def test_load_scan_places_frames_where_the_truth_explains_them(tiny: Path) -> None:
    scan = cxi.load_scan(tiny)
    with h5py.File(tiny, "r") as f:
        probe = f[layout.GROUND_TRUTH_PROBE][()]
        stored = f[layout.FRAMES][()]
    np.testing.assert_array_equal(scan.frames, stored)
    assert scan.frames.dtype == np.float32 and scan.probe_guess is not None and scan.bad_pixels is None
    assert scan.ground_truth is not None and scan.ground_truth.shape == scan.object_shape
    assert scan.positions_px.min() >= 0
    n = probe.shape[0]
    for k, (y, x) in enumerate(np.rint(scan.positions_px).astype(int)):
        assert y + n <= scan.object_shape[0] and x + n <= scan.object_shape[1]
        model = np.abs(
            np.fft.fftshift(np.fft.fft2(probe * scan.ground_truth[y : y + n, x : x + n], norm="ortho"))
        )
        # Poisson noise on sqrt(I) has standard deviation ~1/2 per pixel; a misplaced frame is far off.
        rms = np.sqrt(np.mean((np.sqrt(scan.frames[k]) - model) ** 2))
        assert rms < 1.0, f"frame {k} does not match the truth at its position (rms {rms:.2f})"


def test_load_ground_truth_matches_load_scan(tiny: Path) -> None:
    truth = cxi.load_ground_truth(tiny)
    assert truth is not None
    np.testing.assert_array_equal(truth, cxi.load_scan(tiny).ground_truth)


def test_real_data_has_no_ground_truth(tiny: Path) -> None:
    with h5py.File(tiny, "r+") as f:
        del f["/entry_1/sample_1/ground_truth"]
    assert cxi.load_ground_truth(tiny) is None
    assert not cxi.read_summary(tiny).has_ground_truth


# Peak RSS of this process image from /proc (VmHWM): getrusage's ru_maxrss survives exec and would
# report the (large) pytest parent's peak instead of the child's.
_MEASURE = """
import re, sys
from cosmic_dagster.ptycho import cxi
try:
    s = cxi.read_summary(sys.argv[1])
    outcome = f"ok {s.n_frames}"
except cxi.NonFiniteError as exc:
    outcome = f"nonfinite {exc}"
print(outcome)
with open("/proc/self/status") as status:
    print(int(re.search(r"VmHWM:\\s+(\\d+) kB", status.read()).group(1)) // 1024)
"""


@pytest.mark.slow
def test_validating_a_gigabyte_file_stays_under_200_mb(tiny: Path) -> None:
    """A sparse (mostly unwritten chunks) file of 1.07 GB of frames; validation must read it all."""
    n_frames = 2**16  # 65,536 frames of 64 x 64 float32 = 1.07 GB
    with h5py.File(tiny, "r+") as f:
        translation = np.resize(f[layout.TRANSLATION][()], (n_frames, 3))
        del f[layout.FRAMES], f[layout.TRANSLATION]
        f[layout.TRANSLATION] = translation
        frames = f.create_dataset(layout.FRAMES, (n_frames, 64, 64), np.float32, chunks=(1, 64, 64))
        frames[0] = 1.0
        frames[-1] = 2.0
        assert frames.size * 4 > 1e9
    assert tiny.stat().st_size < 20e6

    def measure() -> tuple[str, int]:
        done = subprocess.run(
            [sys.executable, "-c", _MEASURE, str(tiny)], capture_output=True, text=True, check=True
        )
        outcome, peak_mb = done.stdout.strip().splitlines()
        return outcome, int(peak_mb)

    outcome, peak_mb = measure()
    assert outcome == f"ok {n_frames}"
    assert peak_mb < 200
    with h5py.File(tiny, "r+") as f:
        f[layout.FRAMES][n_frames - 1, 5, 5] = np.nan  # only the very last frame is bad
    outcome, peak_mb = measure()
    assert outcome.startswith("nonfinite") and f"frame {n_frames - 1} " in outcome
    assert peak_mb < 200


def test_mask_marks_bad_pixels_except_the_usable_flag(tiny: Path) -> None:
    with h5py.File(tiny, "r+") as f:
        mask = f[layout.MASK][()]
        mask[0, :3] = 1
        mask[1, :5] = 0x1000  # "usable" in COSMIC masks
        f[layout.MASK][...] = mask
    assert cxi.read_summary(tiny).masked_pixels == 3
    bad = cxi.load_scan(tiny).bad_pixels
    assert bad is not None and bad.sum() == 3 and bad[0, :3].all()
