"""Probe auto-focus: which defocus (sign and magnitude) of the stored probe guess fits the data.

COSMIC stores a *focused* probe guess; the engine must propagate it to the sample, and neither the
sign (which side of the focus the sample sits, and the FFT convention of whoever wrote the file)
nor the magnitude is universal. Short trial reconstructions on a compact patch of frames, one per
candidate defocus, tell them apart. Each trial is scored on frames it did *not* see (the patch's
central frames, held out): a wrong defocus can still fit the frames it was trained on (a too-large
probe overlaps more and fits the noise), but it cannot predict the held-out ones. At high dose the
score's valley around the right defocus is narrow (about ±20 %: a trial 1.4x off scores like a
wrong one), so the candidates must come close.

The search narrows in three rounds: both signs over a coarse ladder (factors of 2), then over
its midpoints (both signs again: near focus both signs score alike, so the first round's winning
sign is not yet evidence), then the winner's neighbours (factors of 2^¼). Where the beam is wide
enough for the bright-field image to move geometrically with the sample
(:mod:`~cosmic_dagster.ptycho.parallax`, no reconstruction needed), the defocus that motion says
joins the candidates with its neighbours (factors of 2^±¼): on such beams the ladder's coarse
steps can miss the narrow valley, even its sign. The search works with any
engine that can run a short trial (:data:`Trial`).
"""

from __future__ import annotations

import itertools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from cosmic_dagster.ptycho import cxi, lowcount, parallax, verdict

#: Coarse candidate magnitudes (m), COSMIC's range; each is tried with both signs.
LADDER_M = (5e-6, 10e-6, 20e-6, 40e-6)
#: Each parallax seed is tried at these factors.
SEED_FACTORS = (2**-0.25, 1.0, 2**0.25)
#: Trials of the ladder: the coarse ladder and its midpoints, with both signs, then the winner's two
#: neighbours ...
LADDER_TRIALS = 2 * len(LADDER_M) + 2 * (len(LADDER_M) - 1) + 2
#: ... and the most a search runs, with the parallax's seed.
TRIALS = LADDER_TRIALS + len(SEED_FACTORS)
#: Most frames a trial uses (a compact patch around the scan's centre) ...
TRIAL_FRAMES = 20
#: ... of which this fraction (at least one), the most central, is held out to score it.
HELD_OUT_FRACTION = 0.2
#: Trial iterations; the probe is refined from the second one.
TRIAL_ITERATIONS = 6
#: Where the verdict fails the run from the chosen defocus (or passes a model that lost photons), the
#: run is repeated from these fractions of it, in turn, until one passes cleanly: the trials' score
#: leans to too large a defocus (most on narrow beams), whose runs keep a too wide probe or make a
#: wrong image, while a run from too small a defocus costs little (``docs/reconstruction-quality.md``,
#: "Reruns from a smaller defocus"). The first also gives a second opinion on a clean pass from a
#: defocus the trials barely fixed (:attr:`Focus.contrast` low; ``epie.judged_run``).
RERUN_FACTORS = (0.5, 0.25)
#: The trials may spend this share of the run's frame-iterations (the rest of one run's time goes
#: to their set-up and scoring): small scans get a smaller patch ...
COST_SHARE = 0.5
#: ... of at least this many training frames.
MIN_TRAINING_FRAMES = 6

#: Runs an engine on ``scan`` for ``iterations`` from a probe guess defocused by ``defocus_m``;
#: returns its object and probe (on ``scan``'s object grid, probe centred).
Trial = Callable[[cxi.ScanData, float, int], tuple[np.ndarray, np.ndarray]]


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
    parallax_m: tuple[float, ...] = ()
    """The defocus values the bright-field parallax suggested (seeds of the trials; () if none)."""
    runs: tuple[tuple[float, str], ...] = ()
    """(defocus in m, why the run was not kept: the verdict's failing signal, ``lost_photons``, or
    ``worse_fit`` where a clean pass lost a second opinion; "" for the run kept) of each whole run,
    in the order run, where the first was repeated (:data:`RERUN_FACTORS`); () where one run
    sufficed."""
    rerun_seconds: float = 0.0
    """The runs not kept (their time is not in the kept run's)."""

    @property
    def rerun_defocus_m(self) -> tuple[float, ...]:
        """Where to repeat a run the verdict failed: smaller defocus values of the search's choice
        (none for an operator's, which is not second-guessed)."""
        if self.chosen_by != "auto":
            return ()
        return tuple(self.defocus_m * factor for factor in RERUN_FACTORS)

    def after_reruns(self, runs: tuple[tuple[float, str], ...], rerun_seconds: float) -> Focus:
        """This search's focus once ``runs`` were made: the defocus of the run kept (the one marked
        "", else the search's), and why, in the reason."""
        passed = [z for z, failure in runs if not failure]
        kept = passed[0] if passed else self.defocus_m
        failed = ", ".join(f"{z * 1e6:+.1f} µm ({failure})" for z, failure in runs if failure)
        outcome = f"kept the run from {kept * 1e6:+.1f} µm" if passed else "none passed; kept the first"
        reason = f"{self.reason}. Not kept: the runs from {failed}: {outcome}"
        return replace(self, defocus_m=kept, reason=reason, runs=runs, rerun_seconds=rerun_seconds)

    @property
    def contrast(self) -> float | None:
        """How sharply the trials fixed the magnitude: the best score of the candidates of the
        chosen sign at most half its magnitude, over the chosen's (None if none was tried). Near 1
        the data barely tell the chosen defocus from a much smaller one, and where they do not, the
        score leans to the larger (``docs/reconstruction-quality.md``)."""
        best = dict(self.trials).get(self.defocus_m)
        half = 0.5 * abs(self.defocus_m) * (1 + 1e-9)  # to rounding: the ladder's midpoints are square roots
        smaller = [s for z, s in self.trials if z * self.defocus_m > 0 and abs(z) <= half]
        if not smaller or best is None or best <= 0:
            return None
        return min(smaller) / best

    def to_summary(self) -> dict[str, object]:
        return {
            "probe_defocus_um": self.defocus_m * 1e6,
            "chosen_by": self.chosen_by,
            "reason": self.reason,
            "trials_um": [[z * 1e6, score] for z, score in self.trials],
            "sign_margin": self.sign_margin,
            "seconds": self.seconds,
            "parallax_um": [z * 1e6 for z in self.parallax_m],
            "contrast": self.contrast,
            "runs": [{"probe_defocus_um": z * 1e6, "verdict_signal": failure} for z, failure in self.runs],
            "rerun_seconds": self.rerun_seconds,
        }


def fixed(defocus_m: float) -> Focus:
    return Focus(defocus_m, "operator", f"fixed at {defocus_m * 1e6:+.1f} µm by the run configuration")


def auto_focus(
    scan: cxi.ScanData,
    trial: Trial,
    run_iterations: int,
    *,
    cone: lowcount.Cone | None = None,
    seeds: tuple[float, ...] | None = None,
) -> Focus:
    """Search the defocus with short trials of ``trial`` on a patch of ``scan``, costing at most
    :data:`COST_SHARE` of a run of ``run_iterations`` over all frames.

    ``seeds`` are defocus values (m) to try besides the ladder (None: the bright-field parallax's,
    if any).

    Trials are scored by the held-out frames' Fourier (amplitude) error, or where ``cone`` (the
    scan's, :func:`lowcount.measure_cone`) is :attr:`~lowcount.Cone.low_count` by their Poisson
    deviance: there the amplitude error favours trials whose model lost photons. Where the trials
    run binned (as :func:`lowcount.binning_factor` bins a run at their defocus, by a factor that
    grows as the defocus shrinks) every trial is scored on the held-out frames binned by the
    smallest coarse candidate's factor, the coarsest the coarse ladder runs at: scored unbinned, a
    less binned trial predicts each pixel of a few photons worse, and the search leant to small
    defocus values (``docs/reconstruction-quality.md``, "Trials scored at one binning").
    """
    start = time.perf_counter()
    affordable = COST_SHARE * run_iterations * len(scan.frames) / (TRIALS * TRIAL_ITERATIONS)
    training_frames = max(MIN_TRAINING_FRAMES, math.floor(affordable))
    training, held_out = trial_patch(
        scan, min(TRIAL_FRAMES, math.ceil(training_frames / (1 - HELD_OUT_FRACTION)))
    )
    binning = 1 if cone is None else lowcount.binning_factor(scan, cone, min(LADDER_M))
    held = verdict.HeldOutFrames(held_out.frames, held_out.positions_px, held_out.bad_pixels, binning)
    low_count = cone is not None and cone.low_count
    predict = held.poisson_deviance if low_count else held.fourier_error
    scores: dict[float, float] = {}

    def score(defocus: float) -> float:
        if defocus not in scores:
            with np.errstate(all="ignore"):
                obj, probe = trial(training, defocus, TRIAL_ITERATIONS)
                finite = np.isfinite(obj).all() and np.isfinite(probe).all()
                scores[defocus] = predict(obj, probe) if finite else math.inf
        return scores[defocus]

    if seeds is None:
        seeds = parallax.defocus_seeds(scan)
    _ladder_search(score)
    for seed in seeds:
        for factor in SEED_FACTORS:
            score(seed * factor)
    best = min(scores, key=scores.__getitem__)
    origin = (
        "the ladder and the bright-field parallax's " + ", ".join(f"{z * 1e6:+.1f}" for z in seeds) + " µm"
        if seeds
        else "the ladder (no bright-field parallax in its geometric regime)"
    )
    other = min((s for z, s in scores.items() if z * best < 0), default=math.inf)
    margin = other / scores[best] if scores[best] > 0 else math.inf
    measure = "Poisson deviance" if low_count else "Fourier error"
    binned = f" (binned {binning}x{binning})" if binning > 1 else ""
    reason = (
        f"{best * 1e6:+.1f} µm: of {len(scores)} trial reconstructions ({origin}) on "
        f"{len(training.frames)} frames, it predicted {len(held_out.frames)} held-out frames{binned} best "
        f"({measure} {scores[best]:.3g}); the best of the other sign was {margin:.2f}x higher"
    )
    return Focus(
        defocus_m=best,
        chosen_by="auto",
        reason=reason,
        trials=tuple(scores.items()),
        sign_margin=margin,
        parallax_m=seeds,
        seconds=time.perf_counter() - start,
    )


def _ladder_search(score: Callable[[float], float]) -> None:
    """The three rounds over fixed candidates (see the module docstring); ``score`` records each."""
    coarse = [sign * magnitude for magnitude in LADDER_M for sign in (1, -1)]
    midpoints = [
        sign * math.sqrt(low * high) for low, high in itertools.pairwise(LADDER_M) for sign in (1, -1)
    ]
    best = min([*coarse, *midpoints], key=score)
    for neighbour in (best / 2**0.25, best * 2**0.25):
        score(neighbour)


def trial_patch(scan: cxi.ScanData, n_frames: int = TRIAL_FRAMES) -> tuple[cxi.ScanData, cxi.ScanData]:
    """The frames nearest the scan's centre, split into a training patch and the held-out centre
    (surrounded by training frames, so a right model predicts them)."""
    positions = scan.positions_px
    order = cxi.central_frames(scan, n_frames)
    n_held = max(1, round(HELD_OUT_FRACTION * len(order)))
    held, train = np.sort(order[:n_held]), np.sort(order[n_held:])
    return (
        replace(scan, frames=scan.frames[train], positions_px=positions[train]),
        replace(scan, frames=scan.frames[held], positions_px=positions[held]),
    )
