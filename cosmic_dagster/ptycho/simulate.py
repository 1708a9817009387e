"""COSMIC-like scan files for tests, demos and beamline emulation.

A sample (a Siemens star with gold balls, cells, a line pattern or scattered particles) is scanned
(jittered raster) by a defocused zone-plate probe; far-field intensities with Poisson noise are
written in the layout, units and file names of COSMIC's preprocessor, so every downstream step can
run on files it cannot tell from real ones. What varies between real files varies here too: the
defocus sign and magnitude, energy, frame size, dose, jitter, bad detector pixels (masked), a
diffuse background, dark-frame subtraction (read noise, negative counts), 2- or 3-column
translations, and the sign convention (:attr:`SimulationSpec.fft_sign`). The default convention is
cdtools' (see :mod:`~cosmic_dagster.ptycho.optics`). The object and probe used are stored apart from
the COSMIC datasets so reconstructions can be scored.

Files appear atomically: written to ``<name>.tmp`` beside the final name, fsynced, then renamed, the
convention the arrival sensor relies on.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import h5py
import numpy as np

from cosmic_dagster.files import atomic_path
from cosmic_dagster.ptycho import layout, optics

#: Kinds of broken file :func:`write_defect` can produce.
DEFECT_KINDS = (
    "zero_bytes",
    "not_hdf5",
    "truncated",
    "not_cxi",
    "missing_dataset",
    "count_mismatch",
    "non_finite",
    "bad_shape",
    "bad_dtype",
    "bad_value",
)

#: Kinds of sample :attr:`SimulationSpec.sample` can name.
SAMPLE_KINDS = ("siemens_star", "cells", "lines", "particles")

_FRAMES_PER_BLOCK_BYTES = 32 * 2**20
#: Mask value of a bad pixel (any value outside ``layout.MASK_USABLE_VALUES``).
_BAD_PIXEL = 1


@dataclass(frozen=True)
class SimulationSpec:
    """Everything that defines a simulated scan; the same spec and seed give the same data."""

    n_side: int = 8
    """Raster positions per axis (n_side² frames)."""
    frame_size: int = 128
    step_px: float = 8.0
    jitter: float = 0.25
    """Uniform position jitter, as a fraction of the step (COSMIC: ±step/4)."""
    margin_px: int = 6
    energy_ev: float = 800.0
    distance_m: float = 0.121
    detector_pixel_m: float = 60e-6
    outer_zone_m: float = 45e-9
    central_stop: float = 0.4
    defocus_m: float | None = None
    """Signed focus-to-sample distance (optics' convention); None means COSMIC's 15 µm x E / 700 eV."""
    photons: float = 1e6
    """Photons per frame (probe intensity)."""
    seed: int = 0
    sample: str = "siemens_star"
    """One of :data:`SAMPLE_KINDS`."""
    fft_sign: int = 1
    """+1: the detector sees the forward FFT of the exit wave (cdtools' convention); -1: the inverse
    one, i.e. mirrored patterns, as files written with the opposite convention."""
    translation_columns: int = 3
    """COSMIC writes [x, y, z]; some writers only [x, y]."""
    bad_pixel_fraction: float = 0.0
    """Fraction of detector pixels that are dead or hot (marked in the mask), plus one dead column
    when > 0."""
    background: float = 0.0
    """Diffuse background (air scatter), mean photons per pixel per frame, not in the model."""
    dark_frames: int = 0
    """Dark frames averaged and subtracted by the preprocessor (0: a photon-counting detector)."""
    read_noise: float = 0.2
    """Detector read noise (photons rms) when ``dark_frames`` > 0 (a CCD at 700 eV: ~0.1-0.3)."""

    def __post_init__(self) -> None:
        checks = {
            "n_side must be >= 2": self.n_side >= 2,
            "frame_size must be an even number >= 16": self.frame_size >= 16 and self.frame_size % 2 == 0,
            "step_px must be > 0": self.step_px > 0,
            "jitter must be in [0, 0.5)": 0 <= self.jitter < 0.5,
            "margin_px must be >= 0": self.margin_px >= 0,
            "energy_ev must be > 0": self.energy_ev > 0,
            "distance_m must be > 0": self.distance_m > 0,
            "detector_pixel_m must be > 0": self.detector_pixel_m > 0,
            "photons must be > 0": self.photons > 0,
            "central_stop must be in [0, 1)": 0 <= self.central_stop < 1,
            f"sample must be one of {', '.join(SAMPLE_KINDS)}": self.sample in SAMPLE_KINDS,
            "fft_sign must be 1 or -1": self.fft_sign in (1, -1),
            "translation_columns must be 2 or 3": self.translation_columns in (2, 3),
            "bad_pixel_fraction must be in [0, 0.5)": 0 <= self.bad_pixel_fraction < 0.5,
            "background must be >= 0": self.background >= 0,
            "dark_frames must be >= 0": self.dark_frames >= 0,
            "read_noise must be >= 0": self.read_noise >= 0,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid SimulationSpec: {'; '.join(failed)}")
        if self.pupil_radius_px >= self.frame_size / 2:
            raise ValueError(
                f"invalid SimulationSpec: the probe cone ({self.pupil_radius_px:.0f} px radius) does not fit "
                f"in {self.frame_size} px frames; use larger detector pixels or frames"
            )
        if self.beam_diameter_px >= self.frame_size:
            # The dual of the cone's limit: the frames' FFT window is periodic, so a wider beam would
            # wrap around onto itself, where a real detector would undersample its diffraction.
            raise ValueError(
                f"invalid SimulationSpec: the defocused beam ({self.beam_diameter_px:.0f} px across) does "
                f"not fit in the {self.frame_size} px field of view; use a smaller defocus, larger frames "
                "or smaller detector pixels"
            )

    @classmethod
    def tiny(cls, seed: int = 0) -> SimulationSpec:
        """16 frames of 64² for unit tests (binned detector keeps the probe cone inside the frame)."""
        return cls(n_side=4, frame_size=64, step_px=6.0, detector_pixel_m=120e-6, seed=seed)

    @classmethod
    def demo(cls, seed: int = 0) -> SimulationSpec:
        """64 frames of 128², the ``make demo`` size: a few MB, seconds to reconstruct."""
        return cls(seed=seed)

    @classmethod
    def realistic(cls, seed: int = 0) -> SimulationSpec:
        """2,500 frames of 256² (50 x 50 raster), about 0.66 GB uncompressed."""
        return cls(n_side=50, frame_size=256, detector_pixel_m=30e-6, seed=seed)

    @property
    def n_positions(self) -> int:
        return self.n_side**2

    @property
    def object_size(self) -> int:
        jitter_px = int(np.ceil(self.jitter * self.step_px))
        span = int(np.ceil((self.n_side - 1) * self.step_px)) + 2 * jitter_px
        return self.frame_size + span + 2 * self.margin_px

    @property
    def wavelength_m(self) -> float:
        return optics.wavelength_m(self.energy_ev)

    @property
    def object_pixel_m(self) -> float:
        return optics.object_pixel_size_m(
            self.energy_ev, self.distance_m, self.detector_pixel_m, self.frame_size
        )

    @property
    def pupil_radius_px(self) -> float:
        return optics.zone_plate_pupil_radius_px(
            self.energy_ev, self.distance_m, self.detector_pixel_m, self.outer_zone_m
        )

    @property
    def resolved_defocus_m(self) -> float:
        return optics.cosmic_probe_defocus_m(self.energy_ev) if self.defocus_m is None else self.defocus_m

    @property
    def beam_diameter_px(self) -> float:
        """Outer diameter of the defocused beam on the sample (object pixels): 2 |z| tan(λ / 2Δr)."""
        return beam_diameter_px(
            self.energy_ev, self.distance_m, self.detector_pixel_m, self.frame_size, self.outer_zone_m,
            self.resolved_defocus_m,
        )  # fmt: skip


def beam_diameter_px(
    energy_ev: float,
    distance_m: float,
    detector_pixel_m: float,
    frame_size: int,
    outer_zone_m: float,
    defocus_m: float,
) -> float:
    """:attr:`SimulationSpec.beam_diameter_px` of a geometry not yet made a spec (one that might not
    fit in its frames)."""
    cone = np.tan(optics.wavelength_m(energy_ev) / (2 * outer_zone_m))
    pixel = optics.object_pixel_size_m(energy_ev, distance_m, detector_pixel_m, frame_size)
    return 2 * abs(defocus_m) * float(cone) / pixel


def cosmic_filename(day: dt.date, scan_number: int, energy_index: int = 0, region: int = 0) -> str:
    """``NS_YYMMDDNNN_ccdframes_E_R.cxi``, the name COSMIC's preprocessor gives a scan."""
    if not 0 <= scan_number <= 999:
        raise ValueError(f"scan_number must be in 0..999 (three digits), got {scan_number}")
    if energy_index < 0 or region < 0:
        raise ValueError(f"energy_index and region must be >= 0, got {energy_index} and {region}")
    return f"NS_{day:%y%m%d}{scan_number:03d}_ccdframes_{energy_index}_{region}.cxi"


def cosmic_relpath(day: dt.date, scan_number: int, energy_index: int = 0, region: int = 0) -> str:
    """``YYYY/MM/YYMMDD/NS_...cxi``, the scan's path below the beamline data root."""
    return f"{day:%Y/%m/%y%m%d}/{cosmic_filename(day, scan_number, energy_index, region)}"


def sample_object(spec: SimulationSpec, rng: np.random.Generator) -> np.ndarray:
    """The complex transmission (complex64, square) of ``spec.sample``."""
    size = spec.object_size
    y, x = np.indices((size, size), dtype=np.float64) - (size - 1) / 2
    if spec.sample == "siemens_star":
        thickness = _star(size, y, x)
        thickness += _balls(size, y, x, rng, max(4, size * size // 400), (2, 6))
        absorption, phase = 0.35, 0.9
    elif spec.sample == "cells":
        # Weakly absorbing, smoothly varying organic matter (a few micro-structures per cell).
        k = np.hypot(*np.meshgrid(np.fft.fftfreq(size), np.fft.fftfreq(size), indexing="ij"))
        noise = np.fft.ifft2(np.fft.fft2(rng.standard_normal((size, size))) * np.exp(-((k / 0.04) ** 2))).real
        thickness = np.clip(noise / noise.std() + 0.5, 0, None)
        absorption, phase = 0.15, 1.2
    elif spec.sample == "lines":
        # A lithographic test pattern: gold bars of several widths in both orientations.
        period = rng.integers(4, 12)
        bars = (np.floor((x + size) / period) % 2 == 0) & (y < 0)
        bars |= (np.floor((y + size) / (period + 3)) % 2 == 0) & (y >= 0)
        thickness = bars.astype(np.float64)
        absorption, phase = 0.6, 0.7
    else:  # particles: scattered nanoparticles of several sizes on a thin membrane
        thickness = 0.1 + _balls(size, y, x, rng, max(6, size * size // 250), (1.5, 8))
        absorption, phase = 0.4, 1.0
    return (np.exp(-absorption * thickness) * np.exp(-1j * phase * thickness)).astype(np.complex64)


#: The star is area-sampled: each pixel averages this many points per side.
STAR_SUBSAMPLES = 4


def _star(size: int, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A 16-spoke Siemens star's thickness, each pixel the share of its area a spoke covers.

    Sampled at pixel centres, the spokes' sharp edges and a centre where they are narrower than a
    pixel alias into frequencies up to the detector's edge, which a real star's far field never
    folds back (what lies beyond the detector is lost): files of a star no beamline could record,
    and a truth no engine should be held to. Averaging 4 x 4 points per pixel cuts the power above
    0.4 cycles per pixel threefold, and the centre's pixel noise (rms against a 16 x 16 average)
    from 0.32 to 0.04."""
    thickness = np.zeros((size, size))
    offsets = (np.arange(STAR_SUBSAMPLES) + 0.5) / STAR_SUBSAMPLES - 0.5
    for dy in offsets:
        for dx in offsets:
            r, theta = np.hypot(y + dy, x + dx), np.arctan2(y + dy, x + dx)
            thickness += (np.sin(16 * theta) > 0) & (r < 0.4 * size)
    return thickness / STAR_SUBSAMPLES**2


def _balls(
    size: int, y: np.ndarray, x: np.ndarray, rng: np.random.Generator, n: int, radii: tuple[float, float]
) -> np.ndarray:
    thickness = np.zeros((size, size))
    for cy, cx, radius in zip(
        rng.uniform(0, size, n), rng.uniform(0, size, n), rng.uniform(*radii, n), strict=True
    ):
        d2 = ((y + (size - 1) / 2 - cy) ** 2 + (x + (size - 1) / 2 - cx) ** 2) / radius**2
        thickness += np.sqrt(np.clip(1 - d2, 0, None))
    return thickness


def zone_plate_probe(spec: SimulationSpec) -> np.ndarray:
    """Defocused annular zone-plate illumination, scaled to ``spec.photons`` (complex64, centred)."""
    n = spec.frame_size
    pupil = optics.zone_plate_pupil(n, spec.pupil_radius_px, spec.central_stop)
    pixel = (spec.object_pixel_m, spec.object_pixel_m)
    spectrum = pupil * optics.fresnel_transfer((n, n), pixel, spec.wavelength_m, spec.resolved_defocus_m)
    probe = optics.centred_ifft2(spectrum)
    probe *= np.sqrt(spec.photons / np.sum(np.abs(probe) ** 2))
    return probe.astype(np.complex64)


def scan_positions(spec: SimulationSpec, rng: np.random.Generator) -> np.ndarray:
    """Top-left corners (row, column) of each frame in the object, integer pixels, shape (N, 2)."""
    jitter_px = int(np.ceil(spec.jitter * spec.step_px))
    grid = np.arange(spec.n_side) * spec.step_px + spec.margin_px + jitter_px
    rows, cols = np.meshgrid(grid, grid, indexing="ij")
    nominal = np.stack([rows.ravel(), cols.ravel()], axis=1)
    jitter = rng.uniform(-spec.jitter, spec.jitter, nominal.shape) * spec.step_px
    return np.rint(nominal + jitter).astype(np.int64)


def diffraction(
    obj: np.ndarray,
    probe: np.ndarray,
    positions: np.ndarray,
    rng: np.random.Generator,
    *,
    fft_sign: int = 1,
    background: np.ndarray | None = None,
) -> np.ndarray:
    """Poisson-noisy, DC-centred far-field intensities (float32) of the given positions.

    ``background`` (mean photons per pixel, DC-centred) is added before the photon noise."""
    n = probe.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(obj, (n, n))
    exit_waves = probe * windows[positions[:, 0], positions[:, 1]]
    transform = np.fft.fft2 if fft_sign > 0 else np.fft.ifft2
    intensity = np.abs(np.fft.fftshift(transform(exit_waves, norm="ortho"), axes=(-2, -1))) ** 2
    if background is not None:
        intensity += background
    return rng.poisson(intensity).astype(np.float32)


def diffuse_background(spec: SimulationSpec) -> np.ndarray | None:
    """The mean air scatter per pixel per frame (DC-centred, falling as 1/r), None without any."""
    if spec.background == 0:
        return None
    n = spec.frame_size
    shape = 1 / (np.hypot(*(np.indices((n, n)) - n // 2)) + 1.0)
    return spec.background * shape / shape.mean()


@dataclass(frozen=True, eq=False)
class _Detector:
    """What the detector and the preprocessor do to the photons: background, darks, bad pixels."""

    background: np.ndarray | None
    dark_residual: np.ndarray | None
    """Fixed pattern left by subtracting the mean of a finite number of dark frames."""
    read_noise: float
    bad: np.ndarray | None
    hot: np.ndarray | None

    @classmethod
    def of(cls, spec: SimulationSpec, rng: np.random.Generator) -> _Detector:
        n = spec.frame_size
        background = diffuse_background(spec)
        residual, noise = None, 0.0
        if spec.dark_frames > 0:
            noise = spec.read_noise
            residual = rng.normal(0, noise / np.sqrt(spec.dark_frames), (n, n))
        bad = hot = None
        if spec.bad_pixel_fraction > 0:
            bad = rng.random((n, n)) < spec.bad_pixel_fraction
            bad[:, rng.integers(0, n)] = True  # a dead column
            hot = bad & (rng.random((n, n)) < 0.3)
        return cls(background, residual, noise, bad, hot)

    def read(self, photons: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Frames as the preprocessor stores them (float32, dark-subtracted, bad pixels raw)."""
        frames = photons
        if self.dark_residual is not None:
            frames = frames + rng.normal(0, self.read_noise, frames.shape) - self.dark_residual
        if self.bad is not None and self.hot is not None:
            frames = np.where(self.bad, 0, frames)
            frames = np.where(self.hot, 6e4, frames)
        return frames.astype(np.float32)


def write_scan(
    path: str | os.PathLike[str], spec: SimulationSpec, *, frame_rate_hz: float | None = None
) -> Path:
    """Simulate ``spec`` into a COSMIC CXI file at ``path``, atomically (``<name>.tmp`` then rename).

    ``frame_rate_hz`` paces the frames like a detector (the ``.tmp`` file grows meanwhile); None
    writes as fast as possible in bounded-memory blocks.
    """
    path = Path(path)
    if frame_rate_hz is not None and frame_rate_hz <= 0:
        raise ValueError(f"frame_rate_hz must be > 0, got {frame_rate_hz}")
    object_rng, position_rng, noise_rng, detector_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(4)
    )
    obj, probe = sample_object(spec, object_rng), zone_plate_probe(spec)
    positions = scan_positions(spec, position_rng)
    detector = _Detector.of(spec, detector_rng)
    # Written as <name>.tmp and renamed when complete, as the beamline does (the watcher knows it).
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        _write_geometry(f, spec, positions, detector)
        _write_ground_truth(f, obj, probe)
        mean_pattern = _write_frames(f, spec, obj, probe, positions, detector, noise_rng, frame_rate_hz)
        _write_probe_guess(f, mean_pattern)
    _fsync(path.parent)
    return path


def simulate_beamline(
    root: str | os.PathLike[str],
    n_scans: int,
    interval_s: float,
    spec: SimulationSpec,
    day: dt.date | None = None,
    first_scan_number: int = 1,
    *,
    frame_rate_hz: float | None = None,
) -> Iterator[Path]:
    """Write ``n_scans`` scans into ``root/YYYY/MM/YYMMDD/``, one every ``interval_s`` seconds.

    Each scan gets its own seed (``spec.seed + i``); yields each final path once it exists.
    """
    if n_scans < 0 or interval_s < 0:
        raise ValueError(f"n_scans and interval_s must be >= 0, got {n_scans} and {interval_s}")
    day = day or dt.date.today()
    start = time.monotonic()
    for i in range(n_scans):
        delay = start + i * interval_s - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        relpath = cosmic_relpath(day, first_scan_number + i)
        yield write_scan(Path(root) / relpath, replace(spec, seed=spec.seed + i), frame_rate_hz=frame_rate_hz)


def write_defect(path: str | os.PathLike[str], kind: str) -> Path:
    """Write a broken scan file of the given kind (one of :data:`DEFECT_KINDS`) at ``path``.

    Like a real scan it appears atomically, so a watcher sees only the finished (broken) file.
    """
    if kind not in DEFECT_KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; expected one of {', '.join(DEFECT_KINDS)}")
    path = Path(path)
    with atomic_path(path) as tmp:
        if kind == "zero_bytes":
            tmp.write_bytes(b"")
        elif kind == "not_hdf5":
            tmp.write_bytes(np.random.default_rng(0).bytes(4096))
        elif kind == "not_cxi":
            with h5py.File(tmp, "w") as f:
                f["entry/data"] = np.zeros((4, 8, 8), np.float32)
        else:
            write_scan(tmp, SimulationSpec.tiny())
            if kind == "truncated":
                os.truncate(tmp, tmp.stat().st_size * 6 // 10)
            else:
                with h5py.File(tmp, "r+") as f:
                    _break(f, kind)
    return path


def _break(f: h5py.File, kind: str) -> None:
    frames = f[layout.FRAMES]
    if kind == "missing_dataset":
        del f[layout.DISTANCE_M]
    elif kind == "count_mismatch":
        translation = f[layout.TRANSLATION][:-1]
        del f[layout.TRANSLATION]
        f[layout.TRANSLATION] = translation
    elif kind == "non_finite":
        n, h, w = frames.shape
        frames[n // 2, h // 2, w // 2] = np.nan
    elif kind in ("bad_shape", "bad_dtype"):
        data = frames[()]
        del f[layout.FRAMES]
        f[layout.FRAMES] = data.reshape(len(data), -1) if kind == "bad_shape" else data.astype(np.complex64)
    elif kind == "bad_value":
        f[layout.ENERGY_J][()] = -1.0


def _write_geometry(f: h5py.File, spec: SimulationSpec, positions: np.ndarray, detector: _Detector) -> None:
    n, size, pixel = spec.frame_size, spec.object_size, spec.object_pixel_m
    # Illumination centre relative to the object pixel at translation zero; COSMIC stores minus it.
    centre_m = (positions + n // 2 - size // 2) * pixel
    translation = np.zeros((len(positions), spec.translation_columns))
    translation[:, 0], translation[:, 1] = -centre_m[:, 1], -centre_m[:, 0]
    f[layout.VERSION] = layout.CXI_VERSION
    f[layout.TRANSLATION] = translation
    for link in layout.TRANSLATION_LINKS:
        f[link] = h5py.SoftLink(layout.TRANSLATION)
    f[layout.ENERGY_J] = spec.energy_ev * optics.JOULES_PER_EV
    f[layout.DISTANCE_M] = spec.distance_m
    f[layout.X_PIXEL_SIZE_M] = spec.detector_pixel_m
    f[layout.Y_PIXEL_SIZE_M] = spec.detector_pixel_m
    p = spec.detector_pixel_m
    f[layout.BASIS_VECTORS] = np.array([[0.0, -p, 0.0], [-p, 0.0, 0.0]])
    f[layout.CORNER_POSITION] = np.array([n / 2 * p, n / 2 * p, spec.distance_m])
    mask = np.zeros((n, n), np.uint32)
    if detector.bad is not None:
        mask[detector.bad] = _BAD_PIXEL
    f[layout.MASK] = mask
    f[layout.METADATA] = json.dumps(
        {
            "translations": (translation[:, [1, 0]] * 1e6).round(6).tolist(),
            "energy": spec.energy_ev,
            "geometry": {"distance": spec.distance_m * 1e3, "psize": spec.detector_pixel_m * 1e6},
            "energyIndex": 0,
            "scanRegion": 0,
            "double_exposure": False,
            "n_repeats": 1,
            "simulated": {
                "seed": spec.seed,
                "photons": spec.photons,
                "defocus_m": spec.resolved_defocus_m,
                "sample": spec.sample,
                "fft_sign": spec.fft_sign,
            },
        }
    )


def _write_ground_truth(f: h5py.File, obj: np.ndarray, probe: np.ndarray) -> None:
    ds = f.create_dataset(layout.GROUND_TRUTH_OBJECT, data=obj)
    ds.attrs[layout.GROUND_TRUTH_ORIGIN_ATTR] = np.array([obj.shape[0] // 2, obj.shape[1] // 2])
    ds.attrs["description"] = "simulation only: the object the frames were computed from"
    f[layout.GROUND_TRUTH_PROBE] = probe


def _write_frames(
    f: h5py.File,
    spec: SimulationSpec,
    obj: np.ndarray,
    probe: np.ndarray,
    positions: np.ndarray,
    detector: _Detector,
    rng: np.random.Generator,
    frame_rate_hz: float | None,
) -> np.ndarray:
    """Write the frames block by block; returns their mean (for the initial illumination)."""
    n = spec.frame_size
    frames = f.create_dataset(
        layout.FRAMES,
        shape=(len(positions), n, n),
        maxshape=(None, n, n),
        dtype=np.float32,
        chunks=(1, n, n),
        compression="lzf",
    )
    frames.attrs["axes"] = "translation:y:x"
    f[layout.FRAMES_LINK] = h5py.SoftLink(layout.FRAMES)
    block = 1 if frame_rate_hz else max(1, _FRAMES_PER_BLOCK_BYTES // (n * n * 8))
    total = np.zeros((n, n))
    start = time.monotonic()
    for first in range(0, len(positions), block):
        photons = diffraction(
            obj,
            probe,
            positions[first : first + block],
            rng,
            fft_sign=spec.fft_sign,
            background=detector.background,
        )
        data = detector.read(photons, rng)
        frames[first : first + len(data)] = data
        total += data.sum(axis=0)
        if frame_rate_hz:
            f.flush()
            time.sleep(max(0.0, start + (first + 1) / frame_rate_hz - time.monotonic()))
    mean = total / len(positions)
    return mean if detector.bad is None else np.where(detector.bad, 0, mean)


def _write_probe_guess(f: h5py.File, mean_pattern: np.ndarray) -> None:
    """acme's initial illumination: the inverse transform of the root mean pattern (no phase)."""
    guess = optics.centred_ifft2(np.sqrt(np.maximum(mean_pattern, 0))).astype(np.complex64)
    first, *others = layout.PROBE_GUESS_PATHS
    f[first] = guess
    for other in others:
        f[other] = f[first]


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
