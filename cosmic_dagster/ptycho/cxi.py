"""Reading and validating COSMIC's preprocessed scan files (``NS_YYMMDDNNN_ccdframes_E_R.cxi``).

Every defect gets its own exception class and a message naming the file and the dataset, because the
message is what an operator sees. Validation reads the frames block by block, so a multi-GB file is
checked in bounded memory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

from cosmic_dagster.errors import CosmicError
from cosmic_dagster.ptycho import layout, optics

_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
_BLOCK_BYTES = 16 * 2**20
# Plausibility ranges, in the units COSMIC stores (J, m): catch eV-vs-J and mm-vs-m mix-ups.
_ENERGY_J_RANGE = (10 * optics.JOULES_PER_EV, 100e3 * optics.JOULES_PER_EV)
_DISTANCE_M_RANGE = (1e-3, 100.0)
_PIXEL_M_RANGE = (1e-7, 1e-2)


class CxiError(CosmicError, ValueError):
    """A scan file that cannot be used; the message names the file and, if any, the dataset."""

    def __init__(self, path: str | os.PathLike[str], reason: str, dataset: str | None = None) -> None:
        self.path, self.reason, self.dataset = str(path), reason, dataset
        where = Path(path).name + (f" {dataset}" if dataset else "")
        super().__init__(f"{where}: {reason}")

    def __reduce__(self):  # keep picklable across processes despite the custom signature
        return type(self), (self.path, self.reason, self.dataset)


class MissingFileError(CxiError):
    """No regular file at the path."""


class EmptyFileError(CxiError):
    """Zero bytes (a writer that created the file but never wrote it)."""


class NotHdf5Error(CxiError):
    """The bytes are not HDF5."""


class TruncatedFileError(CxiError):
    """An HDF5 file shorter than its superblock says (an interrupted copy or write)."""


class UnreadableFileError(CxiError):
    """HDF5 that the library cannot open or read for another reason (corruption)."""


class MissingDatasetError(CxiError):
    """A dataset the CXI layout requires is absent (or is a group)."""


class BadShapeError(CxiError):
    """A dataset has the wrong number of dimensions or sizes."""


class BadDtypeError(CxiError):
    """A dataset has a type that cannot hold what it should (e.g. complex frames)."""


class CountMismatchError(CxiError):
    """Frames and scan translations do not pair up."""


class NonFiniteError(CxiError):
    """NaN or infinity in frames, translations, geometry or the probe guess."""


class BadValueError(CxiError):
    """A finite but impossible value (negative energy, distance in mm instead of m, ...)."""


@dataclass(frozen=True)
class CxiSummary:
    """What a person wants to know about a scan file, in SI units unless the name says otherwise."""

    path: str
    n_frames: int
    frame_shape: tuple[int, int]
    dtype: str
    energy_ev: float
    wavelength_m: float
    distance_m: float
    pixel_size_m: tuple[float, float]
    """Detector pixel (x, y)."""
    object_pixel_size_m: tuple[float, float]
    """Sample-plane pixel (x, y): λ z / (N p)."""
    scan_extent_um: tuple[float, float]
    """Width and height (x, y) covered by the illumination positions."""
    has_probe_guess: bool
    has_mask: bool
    masked_pixels: int
    has_ground_truth: bool
    file_bytes: int
    cxi_version: int | None
    frames_checked: bool
    """Whether every frame was read and found finite (mean/max counts are only known then)."""
    mean_counts_per_frame: float | None
    max_count: float | None

    def to_metadata(self) -> dict[str, str | int | float | bool]:
        """Flat, JSON-able, human-readable keys with units (for the Dagster UI)."""
        meta: dict[str, str | int | float | bool] = {
            "file": Path(self.path).name,
            "file_MB": round(self.file_bytes / 1e6, 3),
            "frames": self.n_frames,
            "frame_shape": f"{self.frame_shape[0]}x{self.frame_shape[1]}",
            "dtype": self.dtype,
            "energy_eV": round(self.energy_ev, 3),
            "wavelength_nm": round(self.wavelength_m * 1e9, 5),
            "detector_distance_mm": round(self.distance_m * 1e3, 3),
            "detector_pixel_um": round(self.pixel_size_m[0] * 1e6, 3),
            "object_pixel_nm": round(self.object_pixel_size_m[0] * 1e9, 3),
            "scan_width_um": round(self.scan_extent_um[0], 3),
            "scan_height_um": round(self.scan_extent_um[1], 3),
            "probe_guess": self.has_probe_guess,
            "masked_pixels": self.masked_pixels,
            "ground_truth": self.has_ground_truth,
            "frames_checked": self.frames_checked,
        }
        if self.pixel_size_m[0] != self.pixel_size_m[1]:
            meta["detector_pixel_y_um"] = round(self.pixel_size_m[1] * 1e6, 3)
            meta["object_pixel_y_nm"] = round(self.object_pixel_size_m[1] * 1e9, 3)
        if self.cxi_version is not None:
            meta["cxi_version"] = self.cxi_version
        if self.mean_counts_per_frame is not None and self.max_count is not None:
            meta["mean_counts_per_frame"] = round(self.mean_counts_per_frame, 1)
            meta["max_count"] = round(self.max_count, 1)
        return meta


@dataclass(frozen=True, eq=False)
class ScanData:
    """A scan in memory, ready for an engine: positions are in object-grid pixels."""

    frames: np.ndarray
    """(N, H, W) float32 intensities, DC in the centre, as stored."""
    positions_px: np.ndarray
    """(N, 2) float64 (row, column) of each frame's top-left corner in the object grid (>= 0)."""
    object_shape: tuple[int, int]
    probe_guess: np.ndarray | None
    """(H, W) complex64 initial illumination as stored (COSMIC: focused, not yet defocused)."""
    bad_pixels: np.ndarray | None
    """(H, W) bool, True where the detector mask marks a pixel unusable; None if all are usable."""
    ground_truth: np.ndarray | None
    """Simulation only: the true object resampled onto the object grid (complex64)."""
    energy_ev: float
    wavelength_m: float
    distance_m: float
    pixel_size_m: tuple[float, float]
    object_pixel_size_m: tuple[float, float]
    summary: CxiSummary


def central_frames(scan: ScanData, n: int) -> np.ndarray:
    """Indices of the ``n`` frames nearest the scan's centre (its median position), nearest first
    (ties in scan order): the compact patch short trials and the parallax work on."""
    positions = scan.positions_px
    centre = np.median(positions, axis=0)
    return np.argsort(np.sum((positions - centre) ** 2, axis=1), kind="stable")[:n]


def read_summary(path: str | os.PathLike[str], *, check_frames: bool = True) -> CxiSummary:
    """Validate a scan file and summarise it without loading the frames into memory.

    ``check_frames`` reads every frame (block by block) to prove it is finite; without it only the
    metadata and the small datasets are checked. Raises a :class:`CxiError` subclass per defect.
    """
    path = Path(path)
    with _open(path) as f:
        return _validate(f, path, check_frames=check_frames)


def load_scan(path: str | os.PathLike[str], *, pad_px: int = 2) -> ScanData:
    """Validate and load a scan for reconstruction (all frames in memory)."""
    path = Path(path)
    with _open(path) as f:
        summary = _validate(f, path, check_frames=False)
        frames_ds = _dataset(f, path, layout.FRAMES, layout.FRAMES_LINK)
        frames = np.empty(frames_ds.shape, np.float32)
        _read_blocks(frames_ds, path, into=frames)
        grid = _ObjectGrid.of(f, summary, pad_px)
        probe_path = _first_present(f, layout.PROBE_GUESS_PATHS)
        probe = f[probe_path][()].astype(np.complex64) if probe_path else None
        mask = f[layout.MASK][()] if layout.MASK in f else None
        truth = grid.ground_truth(f)
    return ScanData(
        frames=frames,
        positions_px=grid.positions_px,
        object_shape=grid.shape,
        probe_guess=probe,
        bad_pixels=_bad_pixels(mask),
        ground_truth=truth,
        energy_ev=summary.energy_ev,
        wavelength_m=summary.wavelength_m,
        distance_m=summary.distance_m,
        pixel_size_m=summary.pixel_size_m,
        object_pixel_size_m=summary.object_pixel_size_m,
        summary=summary,
    )


def load_ground_truth(path: str | os.PathLike[str], *, pad_px: int = 2) -> np.ndarray | None:
    """The simulated true object on the same grid as :func:`load_scan` (None for real data).

    Reads only the small datasets, so an asset check can score a reconstruction cheaply.
    """
    path = Path(path)
    with _open(path) as f:
        summary = _validate(f, path, check_frames=False)
        return _ObjectGrid.of(f, summary, pad_px).ground_truth(f)


@dataclass(frozen=True, eq=False)
class _ObjectGrid:
    """Object-grid pixels of the scan: frame corners, grid shape and where translation zero lies."""

    positions_px: np.ndarray
    shape: tuple[int, int]
    origin_px: np.ndarray
    """Object coordinate (translation units, pixels) of grid pixel (0, 0)."""

    @classmethod
    def of(cls, f: h5py.File, summary: CxiSummary, pad_px: int) -> _ObjectGrid:
        translation = f[layout.TRANSLATION][()].astype(np.float64)
        h, w = summary.frame_shape
        dx, dy = summary.object_pixel_size_m
        # Illumination centre (row, col) in object pixels = minus the stored sample translation.
        centre = np.stack([-translation[:, 1] / dy, -translation[:, 0] / dx], axis=1)
        top_left = centre - np.array([h // 2, w // 2])
        origin = np.floor(top_left.min(axis=0)) - pad_px
        positions = top_left - origin
        extent = np.ceil(positions.max(axis=0)).astype(int)
        return cls(positions, (int(extent[0]) + h + pad_px, int(extent[1]) + w + pad_px), origin)

    def ground_truth(self, f: h5py.File) -> np.ndarray | None:
        truth = f.get(layout.GROUND_TRUTH_OBJECT)
        if truth is None:
            return None
        origin = truth.attrs.get(layout.GROUND_TRUTH_ORIGIN_ATTR, (truth.shape[0] // 2, truth.shape[1] // 2))
        offset = -np.asarray(origin, dtype=np.float64) - self.origin_px
        return _embed(truth[()].astype(np.complex64), self.shape, offset)


def _open(path: Path) -> h5py.File:
    if not path.is_file():
        raise MissingFileError(path, "no such file" if not path.exists() else "not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise EmptyFileError(path, "file is empty (0 bytes)")
    if not _has_hdf5_signature(path, size):
        raise NotHdf5Error(path, f"not an HDF5 file (no HDF5 signature in {size} bytes)")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        message = str(exc)
        if "truncated" in message:
            found = re.search(r"eof = (\d+).*stored_eof = (\d+)", message)
            detail = f" ({found[1]} of {found[2]} bytes present)" if found else ""
            raise TruncatedFileError(path, f"HDF5 file is truncated{detail}") from None
        raise UnreadableFileError(path, f"HDF5 library cannot open it ({message})") from None


def _has_hdf5_signature(path: Path, size: int) -> bool:
    """HDF5 puts its signature at byte 0, 512, 1024, 2048, ... (after an optional user block)."""
    with path.open("rb") as fh:
        offset = 0
        while offset + len(_HDF5_SIGNATURE) <= size:
            fh.seek(offset)
            if fh.read(len(_HDF5_SIGNATURE)) == _HDF5_SIGNATURE:
                return True
            offset = 512 if offset == 0 else offset * 2
    return False


def _validate(f: h5py.File, path: Path, *, check_frames: bool) -> CxiSummary:
    frames = _dataset(f, path, layout.FRAMES, layout.FRAMES_LINK)
    if frames.dtype.kind not in "fiu":
        raise BadDtypeError(path, f"frames have dtype {frames.dtype}; real numbers are expected", frames.name)
    if frames.ndim != 3 or min(frames.shape) < 1 or min(frames.shape[1:]) < 2:
        raise BadShapeError(path, f"shape {frames.shape}; (frames, height, width) expected", frames.name)
    n_frames, height, width = frames.shape

    translation_ds = _dataset(f, path, layout.TRANSLATION, *layout.TRANSLATION_LINKS)
    translation = _real_array(translation_ds, path)
    if translation.ndim != 2 or translation.shape[1] not in (2, 3):
        raise BadShapeError(
            path, f"shape {translation.shape}; (N, 3) [x, y, z] expected", translation_ds.name
        )
    if len(translation) != n_frames:
        raise CountMismatchError(
            path, f"{len(translation)} scan translations for {n_frames} frames", translation_ds.name
        )
    _require_finite(translation, path, translation_ds.name)

    energy_j = _scalar(f, path, layout.ENERGY_J, "J", _ENERGY_J_RANGE)
    distance_m = _scalar(f, path, layout.DISTANCE_M, "m", _DISTANCE_M_RANGE)
    pixel_x = _scalar(f, path, layout.X_PIXEL_SIZE_M, "m", _PIXEL_M_RANGE)
    pixel_y = _scalar(f, path, layout.Y_PIXEL_SIZE_M, "m", _PIXEL_M_RANGE)
    energy_ev = energy_j / optics.JOULES_PER_EV
    wavelength = optics.wavelength_m(energy_ev)
    object_pixel = (wavelength * distance_m / (width * pixel_x), wavelength * distance_m / (height * pixel_y))

    probe_path = _first_present(f, layout.PROBE_GUESS_PATHS)
    if probe_path:
        _check_image(f, path, probe_path, (height, width), "fcu")
    masked = 0
    if layout.MASK in f:
        mask = _check_image(f, path, layout.MASK, (height, width), "biu")
        bad = _bad_pixels(mask)
        masked = 0 if bad is None else int(np.count_nonzero(bad))
    has_truth = layout.GROUND_TRUTH_OBJECT in f
    if has_truth:
        truth = _dataset(f, path, layout.GROUND_TRUTH_OBJECT)
        if truth.ndim != 2:
            raise BadShapeError(path, f"shape {truth.shape}; a 2-D object expected", truth.name)
        _require_finite(truth[()], path, truth.name)

    mean_counts = max_count = None
    if check_frames:
        total, max_count = _read_blocks(frames, path)
        mean_counts = total / n_frames
    version = f[layout.VERSION][()] if layout.VERSION in f else None
    return CxiSummary(
        path=str(path),
        n_frames=n_frames,
        frame_shape=(height, width),
        dtype=str(frames.dtype),
        energy_ev=energy_ev,
        wavelength_m=wavelength,
        distance_m=distance_m,
        pixel_size_m=(pixel_x, pixel_y),
        object_pixel_size_m=object_pixel,
        scan_extent_um=(float(np.ptp(translation[:, 0]) * 1e6), float(np.ptp(translation[:, 1]) * 1e6)),
        has_probe_guess=probe_path is not None,
        has_mask=layout.MASK in f,
        masked_pixels=masked,
        has_ground_truth=has_truth,
        file_bytes=path.stat().st_size,
        cxi_version=int(version) if version is not None and np.ndim(version) == 0 else None,
        frames_checked=check_frames,
        mean_counts_per_frame=mean_counts,
        max_count=max_count,
    )


def _read_blocks(frames: h5py.Dataset, path: Path, into: np.ndarray | None = None) -> tuple[float, float]:
    """Read the frames a bounded block at a time, checking finiteness; returns (sum, max).

    With ``into`` (a preallocated array of the frames' shape) the frames are kept there.
    """
    n_frames, height, width = frames.shape
    per_block = max(1, _BLOCK_BYTES // (height * width * frames.dtype.itemsize))
    direct = into if into is not None and into.dtype == frames.dtype else None
    scratch = (
        direct if direct is not None else np.empty((min(per_block, n_frames), height, width), frames.dtype)
    )
    total, peak = 0.0, -np.inf
    for start in range(0, n_frames, per_block):
        stop = min(start + per_block, n_frames)
        block = scratch[start:stop] if direct is not None else scratch[: stop - start]
        try:
            frames.read_direct(block, np.s_[start:stop], np.s_[0 : stop - start])
        except (OSError, RuntimeError) as exc:
            raise UnreadableFileError(
                path, f"frames {start}..{stop - 1} cannot be read ({exc})", frames.name
            ) from None
        if block.dtype.kind == "f" and not np.isfinite(block).all():
            bad = start + int(np.argmin(np.isfinite(block).all(axis=(1, 2))))
            raise NonFiniteError(path, f"frame {bad} contains NaN or infinity", frames.name)
        total += float(block.sum(dtype=np.float64))
        peak = max(peak, float(block.max()))
        if into is not None and direct is None:
            into[start:stop] = block
    return total, peak


def _dataset(f: h5py.File, path: Path, name: str, *alternatives: str) -> h5py.Dataset:
    for candidate in (name, *alternatives):
        try:
            obj = f.get(candidate)
        except (KeyError, OSError):  # dangling soft link
            obj = None
        if isinstance(obj, h5py.Dataset):
            return obj
    also = f" (nor {', '.join(alternatives)})" if alternatives else ""
    raise MissingDatasetError(path, f"required dataset is missing{also}; is this a COSMIC CXI file?", name)


def _first_present(f: h5py.File, paths: tuple[str, ...]) -> str | None:
    return next((p for p in paths if isinstance(f.get(p), h5py.Dataset)), None)


def _real_array(ds: h5py.Dataset, path: Path) -> np.ndarray:
    if ds.dtype.kind not in "fiu":
        raise BadDtypeError(path, f"dtype {ds.dtype}; real numbers are expected", ds.name)
    return ds[()].astype(np.float64)


def _scalar(f: h5py.File, path: Path, name: str, unit: str, plausible: tuple[float, float]) -> float:
    ds = _dataset(f, path, name)
    values = _real_array(ds, path)
    if values.size != 1:
        raise BadShapeError(path, f"shape {values.shape}; a single value is expected", name)
    value = float(values.reshape(()))
    _require_finite(values, path, name)
    if not plausible[0] <= value <= plausible[1]:
        raise BadValueError(
            path,
            f"value {value:g} {unit} is outside the plausible {plausible[0]:g}..{plausible[1]:g} {unit}",
            name,
        )
    return value


def _check_image(f: h5py.File, path: Path, name: str, shape: tuple[int, int], kinds: str) -> np.ndarray:
    ds = f[name]
    if ds.dtype.kind not in kinds:
        raise BadDtypeError(path, f"dtype {ds.dtype} is not usable here", name)
    if ds.shape != shape:
        raise BadShapeError(path, f"shape {ds.shape}; the frame shape {shape} is expected", name)
    data = ds[()]
    _require_finite(data, path, name)
    return data


def _require_finite(values: np.ndarray, path: Path, name: str) -> None:
    if values.dtype.kind in "fc" and not np.isfinite(values).all():
        raise NonFiniteError(
            path, f"{np.size(values) - np.count_nonzero(np.isfinite(values))} NaN/infinite values", name
        )


def _bad_pixels(mask: np.ndarray | None) -> np.ndarray | None:
    """Unusable detector pixels (True), or None when all are usable."""
    if mask is None:
        return None
    bad = ~np.isin(mask, layout.MASK_USABLE_VALUES)
    return bad if bad.any() else None


def _embed(image: np.ndarray, shape: tuple[int, int], offset: np.ndarray) -> np.ndarray:
    """Place ``image`` with its pixel (0, 0) at ``offset`` of a free-space (1 + 0j) canvas."""
    canvas = np.ones(shape, np.complex64)
    oy, ox = (round(float(v)) for v in offset)
    ys, xs = (
        slice(max(oy, 0), min(oy + image.shape[0], shape[0])),
        slice(max(ox, 0), min(ox + image.shape[1], shape[1])),
    )
    canvas[ys, xs] = image[ys.start - oy : ys.stop - oy, xs.start - ox : xs.stop - ox]
    return canvas
