"""Probe auto-focus: which defocus (sign and magnitude) of the stored probe guess fits the data.

COSMIC stores a *focused* probe guess; the engine must propagate it to the sample, and neither the
sign (which side of the focus the sample sits, and the FFT convention of whoever wrote the file)
nor the magnitude is universal. Short trial reconstructions on a compact patch of frames, one per
candidate defocus, tell them apart: the right one explains the data, the others stall far above.
Two rounds: both signs over a coarse logarithmic ladder, then the two geometric neighbours of the
winner. The search works with any engine that can run a short trial (:data:`Trial`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from cosmic_dagster.ptycho import cxi

#: Coarse candidate magnitudes (m); each is tried with both signs.
LADDER_M = (4e-6, 8e-6, 16e-6, 32e-6, 64e-6)
#: Most frames a trial uses (a compact patch around the scan's centre).
TRIAL_FRAMES = 16
#: Trial iterations; the probe is refined from the second one.
TRIAL_ITERATIONS = 8

#: Runs an engine on ``scan`` for ``iterations`` from a probe guess defocused by ``defocus_m``;
#: returns its Fourier error history.
Trial = Callable[[cxi.ScanData, float, int], Sequence[float]]


@dataclass(frozen=True)
class Focus:
    """The probe defocus an engine used and why (what summary.json and the asset show)."""

    defocus_m: float
    chosen_by: str
    """``auto`` (searched here) or ``operator`` (fixed by the run config)."""
    reason: str
    trials: tuple[tuple[float, float], ...] = ()
    """(defocus in m, trial score) per candidate tried, in the order tried."""
    sign_margin: float | None = None
    """Best score of the other sign / best score (>1: the sign was clear)."""
    seconds: float = 0.0

    def to_summary(self) -> dict[str, object]:
        return {
            "probe_defocus_um": self.defocus_m * 1e6,
            "chosen_by": self.chosen_by,
            "reason": self.reason,
            "trials_um": [[z * 1e6, score] for z, score in self.trials],
            "sign_margin": self.sign_margin,
            "seconds": self.seconds,
        }


def fixed(defocus_m: float) -> Focus:
    return Focus(defocus_m, "operator", f"fixed at {defocus_m * 1e6:+.1f} µm by the run configuration")


def auto_focus(scan: cxi.ScanData, trial: Trial) -> Focus:
    """Search the defocus with short trials of ``trial`` on a patch of ``scan``."""
    start = time.perf_counter()
    patch = trial_patch(scan)
    scores: dict[float, float] = {}

    def score(defocus: float) -> float:
        if defocus not in scores:
            history = [e for e in trial(patch, defocus, TRIAL_ITERATIONS) if math.isfinite(e)]
            scores[defocus] = min(history[-2:]) if history else math.inf
        return scores[defocus]

    for magnitude in LADDER_M:
        for sign in (1, -1):
            score(sign * magnitude)
    best = min(scores, key=scores.__getitem__)
    for neighbour in (best / math.sqrt(2), best * math.sqrt(2)):
        score(neighbour)
    best = min(scores, key=scores.__getitem__)
    other = min((s for z, s in scores.items() if z * best < 0), default=math.inf)
    margin = other / scores[best] if scores[best] > 0 else math.inf
    reason = (
        f"{best * 1e6:+.1f} µm: lowest Fourier error ({scores[best]:.3g}) of {len(scores)} trial "
        f"reconstructions on {len(patch.frames)} frames; the best of the other sign was {margin:.1f}x higher"
    )
    return Focus(
        defocus_m=best,
        chosen_by="auto",
        reason=reason,
        trials=tuple(scores.items()),
        sign_margin=margin,
        seconds=time.perf_counter() - start,
    )


def trial_patch(scan: cxi.ScanData, n_frames: int = TRIAL_FRAMES) -> cxi.ScanData:
    """The ``n_frames`` frames nearest the scan's centre (a compact, overlapping patch)."""
    if len(scan.frames) <= n_frames:
        return scan
    positions = scan.positions_px
    centre = np.median(positions, axis=0)
    nearest = np.sort(np.argsort(np.sum((positions - centre) ** 2, axis=1), kind="stable")[:n_frames])
    return replace(scan, frames=scan.frames[nearest], positions_px=positions[nearest])
