"""Free-space propagation: the separable Fresnel kernel and a field propagated to many distances."""

from __future__ import annotations

import numpy as np
import pytest

from cosmic_dagster.ptycho import optics

PIXEL = (18e-9, 22e-9)
WAVELENGTH = 1.55e-9


@pytest.mark.parametrize("shape", [(64, 64), (48, 75)])
def test_the_transfer_is_the_fresnel_kernel_of_the_whole_frequency_plane(shape: tuple[int, int]) -> None:
    qy, qx = optics.centred_frequencies(shape, PIXEL)
    direct = np.exp(1j * np.pi * WAVELENGTH * 17e-6 * (qy**2 + qx**2))
    np.testing.assert_allclose(optics.fresnel_transfer(shape, PIXEL, WAVELENGTH, 17e-6), direct, atol=1e-6)


def test_a_field_propagated_in_two_steps_or_one_is_the_same() -> None:
    rng = np.random.default_rng(3)
    field = (rng.normal(size=(40, 56)) + 1j * rng.normal(size=(40, 56))).astype(np.complex64)
    guess = optics.Propagation(field, PIXEL, WAVELENGTH)
    assert np.array_equal(guess.to(0.0), field)
    two_steps = optics.propagate(guess.to(-6e-6), PIXEL, WAVELENGTH, 15e-6)
    np.testing.assert_allclose(two_steps, guess.to(9e-6), atol=1e-5 * np.abs(field).max())
    # the spectrum is taken once and reused: a second distance is not the first one's field
    assert not np.allclose(guess.to(9e-6), guess.to(-6e-6))
