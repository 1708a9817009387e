"""The push trigger's bookkeeping: cursor, claims, launches and restarts (no Dagster needed).

``FakeDagster`` keeps partitions and runs in memory with the webserver's semantics (an add answers
added/duplicate, partitions keep insertion order, runs carry tags); the files are real.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cosmic_dagster import names
from cosmic_dagster.cli.watch import Watcher, WatchState, contiguous_segments
from cosmic_dagster.config import Settings
from cosmic_dagster.domain.arrivals import DirectoryLister

DAY = "2026/11/261124"
SETTLE, GRACE = 2.0, 30.0


def name(n: int) -> str:
    return f"NS_261124{n:03d}_ccdframes_0_0"


class FakeDagster:
    def __init__(self) -> None:
        self.partitions: list[str] = []
        self.runs: list[tuple[str, list[str], dict[str, str]]] = []
        self.claim_errors = 0  # next claims raise (request lost before the server saw it)
        self.launch_errors = 0  # next launches raise
        self.launch_lands_anyway = False  # ...after the server created the run (response lost)

    def claim_partition(self, partitions_def: str, key: str) -> bool:
        if self.claim_errors:
            self.claim_errors -= 1
            raise TimeoutError("claim timed out")
        if key in self.partitions:
            return False
        self.partitions.append(key)
        return True

    def newest_partition_keys(self, asset: str, limit: int) -> list[str]:
        return self.partitions[-limit:]

    def launch_scans(self, job: str, keys, tags=None) -> str:
        assert all(k in self.partitions for k in keys), "launched before the partition exists"
        if self.launch_errors:
            self.launch_errors -= 1
            if self.launch_lands_anyway:
                self.runs.append((f"run{len(self.runs)}", list(keys), dict(tags or {})))
            raise TimeoutError("launch timed out")
        self.runs.append((f"run{len(self.runs)}", list(keys), dict(tags or {})))
        return self.runs[-1][0]

    def run_ids_with_tags(self, tags: dict[str, str], limit: int = 100) -> list[str]:
        return [rid for rid, _, t in self.runs if tags.items() <= t.items()][:limit]

    def partition_statuses(self, asset: str) -> dict[str, list[str]]:
        run = {k for _, keys, _ in self.runs for k in keys}
        return {
            "materialized": sorted(run),
            "failed": [],
            "missing": [k for k in self.partitions if k not in run],
            "in_progress": [],
        }

    def launched_keys(self) -> list[str]:
        return [k for _, keys, _ in self.runs for k in keys]


class Clock:
    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "beamline" / DAY).mkdir(parents=True)
    return tmp_path / "beamline"


def write(root: Path, n: int, age: float = 0.0, via_tmp: bool = False) -> Path:
    path = root / DAY / f"{name(n)}.cxi"
    target = path.with_name(path.name + ".tmp") if via_tmp else path
    target.write_bytes(b"scan")
    stamp = time.time() - age
    os.utime(target, (stamp, stamp))
    return target


def watcher(api: FakeDagster, root: Path, clock: Clock, **kw) -> Watcher:
    return Watcher(
        api,
        DirectoryLister(root),
        root.parent / "state" / "watch.json",
        settle_seconds=SETTLE,
        grace_seconds=GRACE,
        clock=clock,
        **kw,
    )


def test_each_scan_is_launched_once_across_polls_and_restarts(root):
    api, clock = FakeDagster(), Clock()
    write(root, 1, age=3)
    w = watcher(api, root, clock)
    assert len(w.poll()) == 1
    assert w.poll() == []
    write(root, 2, age=3)
    write(root, 3, age=3)
    w.poll()
    assert api.launched_keys() == [name(1), name(2), name(3)]
    assert len(api.runs) == 2  # 2 and 3, found together, share one range run
    write(root, 4, age=2.5)  # complete while the watcher is down
    again = watcher(api, root, clock)
    again.poll()
    again.poll()
    assert api.launched_keys() == [name(n) for n in (1, 2, 3, 4)]


def test_scans_not_complete_yet_wait_and_renamed_ones_go_at_once(root):
    api, clock = FakeDagster(), Clock()
    w = watcher(api, root, clock)
    write(root, 1, age=0.5)  # written in place, modified 0.5 s ago: still settling
    tmp = write(root, 2, via_tmp=True)  # being written
    assert w.poll() == []
    os.replace(tmp, tmp.with_suffix(""))  # the writer renames it: complete now
    w.poll()
    assert api.launched_keys() == [name(2)]
    clock.offset = SETTLE
    w.poll()
    assert api.launched_keys() == [name(2), name(1)]


def test_old_scans_and_foreign_partitions_are_left_alone(root):
    api, clock = FakeDagster(), Clock()
    write(root, 1, age=SETTLE + GRACE)  # complete long before the watcher saw it: the sensor's
    write(root, 2, age=3)
    api.partitions.append(name(2))  # registered by someone else (sensor, `cosmic-dagster submit`)
    w = watcher(api, root, clock)
    w.poll()
    assert api.runs == [] and api.partitions == [name(2)]
    assert WatchState.load(w.state_path).batches == []


def test_a_claim_lost_by_a_crash_is_finished_after_restart(root):
    api, clock = FakeDagster(), Clock()
    write(root, 1, age=3)
    w = watcher(api, root, clock)
    api.launch_errors = 1  # the watcher dies (here: its launch fails) after adding the partition
    w.poll()
    assert api.partitions == [name(1)] and api.runs == []
    restarted = watcher(api, root, clock)  # knows only its state file
    restarted.poll()
    assert api.launched_keys() == [name(1)]  # the duplicate answer was its own earlier add


def test_a_launch_whose_answer_was_lost_is_not_repeated(root):
    api, clock = FakeDagster(), Clock()
    write(root, 1, age=3)
    api.launch_errors, api.launch_lands_anyway = 1, True
    w = watcher(api, root, clock)
    w.poll()
    assert len(api.runs) == 1
    watcher(api, root, clock).poll()
    assert len(api.runs) == 1
    assert api.runs[0][2][names.TAG_WATCH_SEGMENT]
    assert WatchState.load(w.state_path).batches == []


def test_an_unanswered_claim_is_decided_after_the_sensors_turn(root):
    api, clock = FakeDagster(), Clock()
    write(root, 1, age=3)
    w = watcher(api, root, clock)
    api.claim_errors = 100  # the webserver stops answering
    w.poll()
    clock.offset = GRACE  # too late to claim, too early to know what the sensor did
    w.poll()
    assert api.runs == [] and len(w.state.batches) == 1
    api.claim_errors = 0
    api.partitions.append(name(1))  # our add had landed after all; nobody ran the scan
    clock.offset = GRACE + 61
    w.poll()
    assert api.launched_keys() == [name(1)]


def test_unanswered_claim_of_a_scan_the_sensor_ran_is_dropped(root):
    api, clock = FakeDagster(), Clock()
    write(root, 1, age=3)
    w = watcher(api, root, clock)
    api.claim_errors = 1
    w.poll()
    api.partitions.append(name(1))
    api.runs.append(("sensor-run", [name(1)], {"dagster/sensor_name": "scan_arrival_sensor"}))
    clock.offset = GRACE + 61
    w.poll()
    assert len(api.runs) == 1 and w.state.batches == []


def test_interleaved_registrations_split_the_range(root):
    assert contiguous_segments(["a", "b", "c"], ["x", "a", "b", "c"]) == [["a", "b", "c"]]
    assert contiguous_segments(["a", "b", "c"], ["a", "x", "b", "c"]) == [["a"], ["b", "c"]]
    assert contiguous_segments(["a", "b"], ["b"]) == [["a"], ["b"]]


def test_state_file_is_replaced_atomically_and_bad_state_is_a_clear_error(root):
    api, clock = FakeDagster(), Clock()
    write(root, 1, age=3)
    w = watcher(api, root, clock)
    w.poll()
    assert not list(w.state_path.parent.glob("*.tmp"))
    assert WatchState.load(w.state_path).cursor.done == {DAY: [f"{name(1)}.cxi"]}
    w.state_path.write_text("{not json")
    with pytest.raises(ValueError, match="unreadable"):
        WatchState.load(w.state_path)


def test_grace_must_leave_the_watcher_room():
    def sensor_grace_from_env(env: dict[str, str]) -> float:
        return Settings.from_env(env).watcher_grace_s()

    assert sensor_grace_from_env({"COSMIC_SENSOR_GRACE_S": "12"}) == 12.0
    with pytest.raises(ValueError, match="is not set"):
        sensor_grace_from_env({})
    with pytest.raises(ValueError, match="at least 3 s"):
        sensor_grace_from_env({"COSMIC_SENSOR_GRACE_S": "0"})
    with pytest.raises(ValueError, match="not a number"):
        sensor_grace_from_env({"COSMIC_SENSOR_GRACE_S": "soon"})
