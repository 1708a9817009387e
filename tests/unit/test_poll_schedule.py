"""The shared poll schedule of SchedulerCompute: dense around a job's expected end, sparse before."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosmic_dagster.compute.base import _Pending
from cosmic_dagster.compute.local.compute import LocalCompute
from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.domain.ledger import Ledger


@pytest.fixture
def compute(tmp_path: Path) -> LocalCompute:
    ledger = Ledger(tmp_path / "l.sqlite")
    return LocalCompute(tmp_path / "jobs", ledger, poll_interval_s=10, max_poll_interval_s=60)


def pending(started_at: float | None, runtime_class: str = "epie:big") -> dict[str, _Pending]:
    spec = JobSpec("j", "#!/bin/sh\n", "/w", runtime_class=runtime_class)
    return {"j": _Pending(spec, "1", 0.0, False, started_at)}


def test_run_times_and_their_spread_are_learnt_per_class(compute: LocalCompute) -> None:
    spec = pending(0.0)["j"].spec
    assert compute.expected_run(spec) is None
    for seconds in (3570, 3600, 3630):
        compute.record_run_s("epie:big", seconds)
    compute.record_run_s("epie:small", 60)
    assert compute.expected_run(spec) == (3600, 90)  # 3 median absolute deviations
    compute.record_run_s("epie:big", 3600)
    compute.record_run_s("epie:big", 3600)
    assert compute.expected_run(spec) == (3600, 72)  # at least 2 % of the run time
    for seconds in (1800, 3600, 5400):
        compute.record_run_s("epie:varied", seconds)
    varied = JobSpec("v", "#!/bin/sh\n", "/w", runtime_class="epie:varied")
    # at most what costs no more polls than the backoff: 2w/10 + (3600 - w)/120 = 3600/60
    budget = 3600 * (1 / 60 - 1 / 120) / (2 / 10 - 1 / 120)
    assert compute.expected_run(varied) == (3600, pytest.approx(budget))


@pytest.mark.parametrize(
    ("now", "wait"),
    [
        (100, 120),  # far from the end: sparse (2 x max interval)
        (3350, 70),  # sleep up to the window (180 s before the expected end)
        (3500, 10),  # inside the window: every poll interval
        (3700, 10),
        (3900, 45),  # overdue: the usual backoff
    ],
)
def test_polls_are_dense_only_around_the_expected_end(compute: LocalCompute, now: float, wait: float) -> None:
    assert compute.next_poll_s(pending(started_at=0.0), {"j": (3600.0, 180.0)}, 45, now) == pytest.approx(
        wait
    )


def test_without_an_expectation_the_backoff_applies(compute: LocalCompute) -> None:
    assert compute.next_poll_s(pending(None), {"j": (3600.0, 180.0)}, 15, 100) == 15  # not started
    assert compute.next_poll_s(pending(0.0), {"j": None}, 15, 100) == 15  # no history


def test_the_earliest_need_of_a_batch_wins(compute: LocalCompute) -> None:
    jobs = {**pending(0.0), "k": _Pending(pending(0.0)["j"].spec, "2", 0.0, False, 3000.0)}
    expected = {"j": (3600.0, 180.0), "k": (3600.0, 180.0)}
    assert compute.next_poll_s(jobs, expected, 45, 3500) == 10  # j is near its end, k is not
