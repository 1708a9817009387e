"""Probe auto-focus: the search narrows onto a defocus between its coarse candidates, within budget."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from cosmic_dagster.ptycho import cxi, epie, focus, lowcount, simulate
from cosmic_dagster.ptycho.simulate import SimulationSpec

NAME = "NS_230216033_ccdframes_0_0.cxi"


def test_a_defocus_between_the_coarse_candidates_is_found(tmp_path: Path) -> None:
    """At high dose the score's valley is narrow: 31 µm lies between the coarse 20 and 40 µm, both
    of which score worse than a near-focus guess; only the narrowing rounds find it."""
    spec = SimulationSpec(
        n_side=6, frame_size=128, step_px=19.0, energy_ev=434.0, detector_pixel_m=70.7e-6,
        defocus_m=31e-6, photons=2.5e6, seed=4, sample="particles",
    )  # fmt: skip
    scan = cxi.load_scan(simulate.write_scan(tmp_path / NAME, spec))
    chosen = focus.auto_focus(
        scan, epie._trial(1.0, 1.0, 0, lowcount.measure_cone(scan)), epie.DEFAULT_ITERATIONS
    )
    scores = dict(chosen.trials)
    assert 2**-0.25 <= chosen.defocus_m / 31e-6 <= 2**0.25, chosen.reason
    near_focus = min(scores[5e-6], scores[10e-6])
    assert scores[20e-6] > near_focus and scores[40e-6] > near_focus  # the coarse ladder alone misses it
    assert len(scores) == focus.TRIALS and chosen.sign_margin is not None and chosen.sign_margin > 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> cxi.ScanData:
    return cxi.load_scan(simulate.write_scan(tmp_path_factory.mktemp("tiny") / NAME, SimulationSpec.tiny()))


@pytest.mark.parametrize("frames", [9, 16, 36, 100])
def test_the_trials_spend_at_most_their_share_of_a_run(tiny: cxi.ScanData, frames: int) -> None:
    """Counted in frame-iterations (what a trial's time is proportional to), not in seconds."""
    spent: list[int] = []

    def trial(patch: cxi.ScanData, defocus_m: float, iterations: int) -> tuple[np.ndarray, np.ndarray]:
        spent.append(len(patch.frames) * iterations)
        return np.ones(patch.object_shape, np.complex64), np.ones(patch.frames.shape[1:], np.complex64)

    pick = np.arange(frames) % len(tiny.frames)  # more frames than the tiny scan has: repeat them
    scan = replace(tiny, frames=tiny.frames[pick], positions_px=tiny.positions_px[pick])
    chosen = focus.auto_focus(scan, trial, run_iterations=100)
    assert len(spent) == focus.TRIALS and chosen.chosen_by == "auto"
    floor = focus.MIN_TRAINING_FRAMES * focus.TRIAL_ITERATIONS * focus.TRIALS
    assert sum(spent) <= max(focus.COST_SHARE * 100 * frames, floor)
