"""A small PNG of a complex object, amplitude | phase with colour bars, for the Dagster UI and READMEs.

Pillow and numpy only (matplotlib would be a heavy dependency for one picture).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from cosmic_dagster.files import atomic_path

WIDTH = 512
_MARGIN = 8
_IMAGE = 190
_BAR = 12
_GAP = 5
_TITLE_H = 18
_LABEL_H = 14
# One fixed 256-colour palette: 128 greys (amplitude; also background and ink) then 128 viridis levels
# (phase). Drawing in palette mode keeps the PNG small without the banding of adaptive quantisation.
_LEVELS = 128
_GREY, _VIRIDIS_START = 0, _LEVELS
_BACKGROUND, _INK = _LEVELS - 1, 0
# Samples of the viridis colour map (CC0), interpolated to _LEVELS levels.
_VIRIDIS_SAMPLES = np.array(
    [
        (68, 1, 84), (72, 40, 120), (62, 73, 137), (49, 104, 142), (38, 130, 142),
        (31, 158, 137), (53, 183, 121), (110, 206, 88), (181, 222, 43), (253, 231, 37),
    ],
    dtype=np.float64,
)  # fmt: skip


def write_preview(obj: np.ndarray, path: str | os.PathLike[str], *, title: str | None = None) -> Path:
    """Write ``obj`` (2-D complex) as a PNG ~512 px wide: amplitude (grey) | phase (viridis)."""
    obj = np.asarray(obj)
    if obj.ndim != 2 or min(obj.shape) < 1:
        raise ValueError(f"preview needs a non-empty 2-D array, got shape {obj.shape}")
    obj = np.nan_to_num(obj.astype(np.complex128), nan=0.0, posinf=0.0, neginf=0.0)
    scale = _IMAGE / max(obj.shape)
    size = (max(1, round(obj.shape[1] * scale)), max(1, round(obj.shape[0] * scale)))
    top = _MARGIN + (_TITLE_H if title else 0) + _LABEL_H
    canvas = Image.new("P", (WIDTH, top + _IMAGE + _MARGIN), _BACKGROUND)
    canvas.putpalette(_palette())
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default()
    if title:
        draw.text((_MARGIN, _MARGIN), title[:80], fill=_INK, font=font)
    panel_width = (WIDTH - _MARGIN) // 2
    for i, (label, values, first) in enumerate(
        [("amplitude", np.abs(obj), _GREY), ("phase (rad)", np.angle(obj), _VIRIDIS_START)]
    ):
        left = _MARGIN + i * panel_width
        resized = np.asarray(
            Image.fromarray(values.astype(np.float32), "F").resize(size, Image.Resampling.BILINEAR)
        )
        low, high = _robust_range(values)
        canvas.paste(Image.fromarray(first + _to_levels(resized, low, high), "L"), (left, top))
        draw.text((left, top - _LABEL_H), label, fill=_INK, font=font)
        _colour_bar(canvas, draw, font, first, (left + size[0] + _GAP, top), size[1], low, high)
    with atomic_path(path) as tmp:
        canvas.save(tmp, format="PNG", optimize=True)
    return Path(path)


def _robust_range(values: np.ndarray) -> tuple[float, float]:
    low, high = (float(v) for v in np.percentile(values, [0.5, 99.5]))
    return (low, high) if high > low else (low, low + 1.0)


def _to_levels(values: np.ndarray, low: float, high: float) -> np.ndarray:
    return np.clip((values - low) / (high - low) * (_LEVELS - 1), 0, _LEVELS - 1).round().astype(np.uint8)


def _palette() -> list[int]:
    grey = np.repeat(np.linspace(0, 255, _LEVELS)[:, None], 3, axis=1)
    at = np.linspace(0, len(_VIRIDIS_SAMPLES) - 1, _LEVELS)
    viridis = np.stack(
        [np.interp(at, np.arange(len(_VIRIDIS_SAMPLES)), _VIRIDIS_SAMPLES[:, c]) for c in range(3)], axis=1
    )
    return np.round(np.concatenate([grey, viridis])).astype(np.uint8).ravel().tolist()


def _colour_bar(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    font: ImageFont.ImageFont | ImageFont.FreeTypeFont,
    first: int,
    origin: tuple[int, int],
    height: int,
    low: float,
    high: float,
) -> None:
    levels = first + np.linspace(_LEVELS - 1, 0, max(height, 2)).round().astype(np.uint8)
    canvas.paste(Image.fromarray(np.repeat(levels[:, None], _BAR, axis=1), "L"), origin)
    x, y = origin
    draw.rectangle((x, y, x + _BAR - 1, y + height - 1), outline=_INK)
    for fraction, value in ((0.0, high), (0.5, (low + high) / 2), (1.0, low)):
        ty = y + round(fraction * (height - 1))
        draw.line((x + _BAR, ty, x + _BAR + 3, ty), fill=_INK)
        draw.text(
            (x + _BAR + 5, min(max(ty - 5, y - 5), y + height - 10)), f"{value:.3g}", fill=_INK, font=font
        )
