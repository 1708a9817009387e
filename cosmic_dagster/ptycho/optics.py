"""X-ray optics shared by the simulator and the engine, so both use one set of conventions.

Conventions: far field = ``numpy.fft.fft2`` (forward transform, ``exp(-2πi k·x/N)``); free-space
propagation by ``dz`` multiplies the spectrum by ``exp(+iπ λ dz |q|²)`` (Fresnel transfer function).
This is cdtools' sign: a probe defocus of ``+15 µm·E/700 eV`` here is what COSMIC's cdtools jobs set
as ``propagation_distance``, and what real COSMIC files (and the simulator by default) need.
Data of the mirrored convention (the other FFT sign, or the focus on the other side of the sample)
needs the opposite sign; the engine's auto-focus finds either. Arrays are centred (DC / optical axis
in the middle) unless a name says otherwise.
"""

from __future__ import annotations

import numpy as np

PLANCK_EV_S = 4.135667696e-15
SPEED_OF_LIGHT_M_S = 299_792_458.0
JOULES_PER_EV = 1.602176634e-19

#: COSMIC's zone plate focus sits 15 µm from the sample at 700 eV and moves with energy (the
#: magnitude and sign cdtools' COSMIC jobs use).
COSMIC_DEFOCUS_M_AT_700EV = 15e-6


def wavelength_m(energy_ev: float) -> float:
    """λ = hc / E."""
    return PLANCK_EV_S * SPEED_OF_LIGHT_M_S / energy_ev


def cosmic_probe_defocus_m(energy_ev: float) -> float:
    """Distance from the zone-plate focus to the sample at COSMIC, proportional to energy."""
    return COSMIC_DEFOCUS_M_AT_700EV * energy_ev / 700.0


def object_pixel_size_m(energy_ev: float, distance_m: float, detector_pixel_m: float, n_pixels: int) -> float:
    """Sample-plane pixel of a far-field geometry: λ z / (N p)."""
    return wavelength_m(energy_ev) * distance_m / (n_pixels * detector_pixel_m)


def beam_diameter_m(defocus_m: float, wavelength_m: float, pupil_radius_per_m: float) -> float:
    """A zone-plate beam's width ``defocus_m`` from its focus: 2 |z| λ q_max, q_max the pupil's
    radius as a spatial frequency (the cone's half-angle over λ)."""
    return 2 * abs(defocus_m) * wavelength_m * pupil_radius_per_m


def centred_frequencies(
    shape: tuple[int, int], pixel_m: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Spatial frequencies (1/m) of a centred spectrum, as broadcastable (qy, qx)."""
    qy = np.fft.fftshift(np.fft.fftfreq(shape[0], d=pixel_m[0]))[:, None]
    qx = np.fft.fftshift(np.fft.fftfreq(shape[1], d=pixel_m[1]))[None, :]
    return qy, qx


def fresnel_transfer(
    shape: tuple[int, int], pixel_m: tuple[float, float], wavelength: float, dz_m: float
) -> np.ndarray:
    """Centred Fresnel transfer function ``exp(+iπ λ dz |q|²)`` (complex64), as the outer product of
    its row and column factors: a frame's worth of complex exponentials took the auto-focus longer
    than a binned trial's iterations on large frames."""
    qy, qx = centred_frequencies(shape, pixel_m)
    phase = np.pi * wavelength * dz_m
    return (np.exp(1j * phase * qy**2) * np.exp(1j * phase * qx**2)).astype(np.complex64)


def centred_fft2(field: np.ndarray) -> np.ndarray:
    """Orthonormal 2-D FFT of a centred field to a centred spectrum."""
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(field, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))


def centred_ifft2(spectrum: np.ndarray) -> np.ndarray:
    """Inverse of :func:`centred_fft2`."""
    return np.fft.fftshift(
        np.fft.ifft2(np.fft.ifftshift(spectrum, axes=(-2, -1)), norm="ortho"), axes=(-2, -1)
    )


def propagate(field: np.ndarray, pixel_m: tuple[float, float], wavelength: float, dz_m: float) -> np.ndarray:
    """Free-space propagation of a centred field by ``dz_m`` (angular spectrum, Fresnel kernel)."""
    return Propagation(field, pixel_m, wavelength).to(dz_m)


class Propagation:
    """A centred field whose angular spectrum is taken once, propagated to any distance: the
    auto-focus propagates one probe guess to each of its candidates."""

    def __init__(self, field: np.ndarray, pixel_m: tuple[float, float], wavelength: float) -> None:
        self.field = field
        self.pixel_m = pixel_m
        self.wavelength = wavelength
        self._spectrum: np.ndarray | None = None

    def to(self, dz_m: float) -> np.ndarray:
        """The field ``dz_m`` downstream (complex64)."""
        if dz_m == 0:
            return self.field.astype(np.complex64)
        if self._spectrum is None:
            self._spectrum = centred_fft2(self.field)
        transfer = fresnel_transfer(self.field.shape[-2:], self.pixel_m, self.wavelength, dz_m)
        return centred_ifft2(self._spectrum * transfer).astype(np.complex64)


def zone_plate_pupil(n_pixels: int, radius_px: float, central_stop: float) -> np.ndarray:
    """Centred annular far-field pupil (float32 0/1) of a zone plate with a central stop."""
    y, x = np.indices((n_pixels, n_pixels), dtype=np.float64) - n_pixels // 2
    r = np.hypot(y, x)
    return ((r <= radius_px) & (r >= central_stop * radius_px)).astype(np.float32)


def zone_plate_pupil_radius_px(
    energy_ev: float, distance_m: float, detector_pixel_m: float, outer_zone_m: float
) -> float:
    """Radius on the detector (pixels) of the cone a zone plate focuses: z·tan(λ / 2Δr) / p."""
    return distance_m * np.tan(wavelength_m(energy_ev) / (2 * outer_zone_m)) / detector_pixel_m
