"""Preview PNG: small, ~512 px wide, amplitude in grey and phase in colour, robust to bad values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosmic_dagster.ptycho.preview import WIDTH, write_preview


def _object(shape: tuple[int, int] = (120, 160)) -> np.ndarray:
    y, x = np.indices(shape)
    amplitude = 0.5 + 0.5 * (x / shape[1])  # left dark -> right bright
    phase = np.pi * (y / shape[0]) - np.pi / 2  # top -> bottom
    return (amplitude * np.exp(1j * phase)).astype(np.complex64)


def _rgb(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        assert image.format == "PNG"
        return np.asarray(image.convert("RGB")).astype(int)


def test_preview_shows_amplitude_grey_and_phase_in_colour(tmp_path: Path) -> None:
    path = write_preview(_object(), tmp_path / "sub" / "p.png", title="NS_230216033 (epie, 100 it)")
    pixels = _rgb(path)
    assert pixels.shape[1] == WIDTH and 150 < pixels.shape[0] < 300
    row = pixels[pixels.shape[0] // 2]
    left = row[20:150]  # inside the amplitude panel
    assert np.all(left[:, 0] == left[:, 1]) and np.all(left[:, 1] == left[:, 2])  # grey
    assert left[-1, 0] > left[0, 0] + 100  # brighter to the right, as the amplitude
    right = row[WIDTH // 2 + 20 : WIDTH // 2 + 150]
    assert np.any(right[:, 0] != right[:, 2])  # coloured
    assert path.stat().st_size < 100_000
    assert not list(tmp_path.rglob("*.tmp"))


def test_noisy_object_stays_small(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    noisy = rng.standard_normal((400, 400)) + 1j * rng.standard_normal((400, 400))
    assert write_preview(noisy, tmp_path / "noise.png").stat().st_size < 100_000


def test_non_finite_values_do_not_break_the_preview(tmp_path: Path) -> None:
    obj = _object()
    obj[:10] = np.nan
    obj[-1, -1] = np.inf
    assert _rgb(write_preview(obj, tmp_path / "nan.png")).shape[1] == WIDTH
    assert _rgb(write_preview(np.zeros((8, 8)), tmp_path / "flat.png")).shape[1] == WIDTH


@pytest.mark.parametrize("bad", [np.zeros(10), np.zeros((0, 5)), np.zeros((2, 2, 2))])
def test_rejects_non_images(tmp_path: Path, bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="2-D"):
        write_preview(bad, tmp_path / "x.png")
