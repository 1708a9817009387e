"""The fast path through the real daemon: push trigger (``cosmic-dagster watch``) + warm run workers.

One module-scoped deployment: daemon + webserver on a fresh DAGSTER_HOME with the repository's
dagster.yaml (WarmRunLauncher), and the watcher as its own process. The sensor waits
``COSMIC_SENSOR_GRACE_S`` before taking a scan, so fresh scans are the watcher's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster_graphql import DagsterGraphQLClient

from cosmic_dagster import names
from cosmic_dagster.config import Settings
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.processes import process_start_time
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.instance.warm_launcher import WarmRunLauncher, WorkerRef
from cosmic_dagster.instance.warm_worker import changed_files, user_code_fingerprint
from tests.e2e.conftest import LiveInstance, start_live_instance

GRACE_S = 12  # the sensor leaves a scan to the watcher this long (kept short for the test)


@dataclass
class FastPath:
    live: LiveInstance

    def start_watcher(self) -> None:
        self.live.services.start_watcher()

    def stop_watcher(self) -> None:
        self.live.services.stop_watcher()


@pytest.fixture(scope="module")
def fast(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastPath]:
    live = start_live_instance(
        tmp_path_factory.mktemp("fast"), {"COSMIC_SENSOR_GRACE_S": str(GRACE_S), "COSMIC_LOCAL_SLOTS": "2"}
    )
    fast = FastPath(live)
    try:
        fast.start_watcher()
        yield fast
    finally:
        fast.stop_watcher()
        live.services.stop()
        _kill_leftovers(live)


def _kill_leftovers(live: LiveInstance) -> None:
    """Local jobs outlive the daemon by design (and a run worker might): leave nothing behind."""
    for run in live.instance.get_runs():
        ref = WorkerRef.from_tags(run.tags)
        if ref is not None and ref.local and ref.alive():
            os.kill(ref.pid, signal.SIGKILL)
    for status in (live.settings.state_dir / "local-jobs").glob("*/status.json"):
        pid = json.loads(status.read_text()).get("runner_pid")
        if pid and process_start_time(pid) is not None:
            os.killpg(pid, signal.SIGKILL)


def launched_keys(instance: dg.DagsterInstance) -> Counter[str]:
    """How many first launches (retries excluded) covered each scan key."""
    order = instance.get_dynamic_partitions("scans")
    counts: Counter[str] = Counter()
    for run in instance.get_runs(dg.RunsFilter(job_name="scan_job")):
        if "dagster/parent_run_id" in run.tags:
            continue
        if "dagster/partition" in run.tags:
            counts[run.tags["dagster/partition"]] += 1
            continue
        start = order.index(run.tags["dagster/asset_partition_range_start"])
        end = order.index(run.tags["dagster/asset_partition_range_end"])
        counts.update(order[start : end + 1])
    return counts


def runs_covering(instance: dg.DagsterInstance, key: str) -> list[dg.DagsterRun]:
    order = instance.get_dynamic_partitions("scans")
    out = []
    for run in instance.get_runs(dg.RunsFilter(job_name="scan_job")):
        tags = run.tags
        if tags.get("dagster/partition") == key or (
            "dagster/asset_partition_range_start" in tags
            and order.index(tags["dagster/asset_partition_range_start"])
            <= order.index(key)
            <= order.index(tags["dagster/asset_partition_range_end"])
        ):
            out.append(run)
    return out


def handed_to_warm_worker(instance: dg.DagsterInstance, run_id: str) -> bool:
    events = instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    return any("handed to a warm run worker" in (e.message or "") for e in events)


def launch_slow_scan(live: LiveInstance, iterations: int) -> tuple[str, str]:
    """A scan outside the watched day folders, run by hand with a long reconstruction."""
    relpath = f"manual/{live.beamline.relpath().rsplit('/', 1)[1]}"
    live.beamline.scan(relpath)
    key = scan_key(relpath)
    live.api.add_partition("scans", key)
    config = {"ops": {"scan_pipeline": {"config": {"iterations": iterations}}}}
    return key, live.api.launch_run("scan_job", partition_key=key, run_config=config)


def wait_for_running_job(live: LiveInstance, key: str) -> tuple[str, Path]:
    ledger = Ledger(live.settings.state_dir / "ledger.sqlite")
    found: dict[str, str] = {}

    def running() -> bool:
        for name, record in ledger.all("job").items():
            status = live.settings.state_dir / "local-jobs" / record["job_id"] / "status.json"
            if (
                f".{key}." in name
                and status.exists()
                and json.loads(status.read_text())["state"] == "RUNNING"
            ):
                found["job_id"] = record["job_id"]
                return True
        return False

    live.wait_for(f"the reconstruction job of {key} to run", running, timeout_s=120)
    job_id = found["job_id"]
    return job_id, live.settings.state_dir / "local-jobs" / job_id / "status.json"


def run_status(live: LiveInstance, run_id: str) -> dg.DagsterRunStatus:
    run = live.instance.get_run_by_id(run_id)
    assert run is not None
    return run.status


@pytest.mark.e2e
@pytest.mark.slow
def test_fresh_scans_go_through_the_watcher_and_missed_ones_through_the_sensor(fast):
    # Without it the sensor races the watcher for fresh scans (see cosmic_dagster/cli/watch.py).
    assert "sensor_grace_s" in Settings.__dataclass_fields__, "the sensor ignores COSMIC_SENSOR_GRACE_S"
    live, bl = fast.live, fast.live.beamline
    first = scan_key(bl.scan())
    live.wait_checked([first])
    burst = [scan_key(bl.scan()) for _ in range(3)]
    live.wait_checked(burst)
    for key in [first, *burst]:
        assert [r.tags.get(names.TAG_SUBMITTED_BY) for r in runs_covering(live.instance, key)] == [
            names.BY_WATCHER
        ]
    watch_runs = {r.run_id for k in [first, *burst] for r in runs_covering(live.instance, k)}
    assert any(handed_to_warm_worker(live.instance, run_id) for run_id in watch_runs)

    fast.stop_watcher()  # down: the sensor takes what arrives, after its grace
    missed = scan_key(bl.scan())
    live.wait_checked([missed], timeout_s=120)
    assert [r.tags.get("dagster/sensor_name") for r in runs_covering(live.instance, missed)] == [
        "scan_arrival_sensor"
    ]

    fast.start_watcher()  # back: takes new scans, leaves the one the sensor ran
    back = scan_key(bl.scan())
    live.wait_checked([back])
    time.sleep(2)  # a late duplicate launch would show up here
    assert [r.tags.get(names.TAG_SUBMITTED_BY) for r in runs_covering(live.instance, back)] == [
        names.BY_WATCHER
    ]
    counts = launched_keys(live.instance)
    assert {key: counts[key] for key in [first, *burst, missed, back]} == dict.fromkeys(
        [first, *burst, missed, back], 1
    )


@pytest.mark.e2e
@pytest.mark.slow
def test_terminating_a_run_cancels_it_and_its_job(fast):
    live = fast.live
    key, run_id = launch_slow_scan(live, iterations=200_000)
    _, status_file = wait_for_running_job(live, key)
    DagsterGraphQLClient("127.0.0.1", port_number=live.services.port).terminate_run(run_id)
    live.wait_for("the run to end CANCELED", lambda: run_status(live, run_id) == dg.DagsterRunStatus.CANCELED)
    live.wait_for(
        "the job to be cancelled", lambda: json.loads(status_file.read_text())["state"] == "CANCELLED", 30
    )
    retries = live.instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    assert retries == []  # an operator's termination is not retried


@pytest.mark.e2e
@pytest.mark.slow
def test_a_killed_run_worker_is_detected_and_the_retry_reattaches(fast):
    live = fast.live
    key, run_id = launch_slow_scan(live, iterations=10_000)
    job_id, _ = wait_for_running_job(live, key)
    run = live.instance.get_run_by_id(run_id)
    assert run is not None
    os.kill(int(run.tags[names.TAG_WORKER_PID]), signal.SIGKILL)

    live.wait_for(
        "run monitoring to fail the run", lambda: run_status(live, run_id) == dg.DagsterRunStatus.FAILURE
    )
    retry_ids: list[str] = []

    def retried() -> bool:
        retries = live.instance.get_runs(dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
        retry_ids[:] = [r.run_id for r in retries]
        return any(r.status == dg.DagsterRunStatus.SUCCESS for r in retries)

    def story() -> str:
        return "; ".join(live.run_story(i) for i in [run_id, *retry_ids]) + f"; retries: {len(retry_ids)}"

    live.wait_for("the retry to succeed", retried, timeout_s=180, state=story)
    assert len(retry_ids) == 1
    recon = live.progress([key])[key].metadata["reconstruction"]
    assert recon["job_id"] == job_id and recon["reattached"] is True


# --- launcher and worker pieces, without a daemon ----------------------------------------------


def test_changed_user_code_is_detected(tmp_path, monkeypatch):
    module = tmp_path / "fresh_probe_module.py"
    module.write_text("X = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    __import__("fresh_probe_module")
    try:
        before = user_code_fingerprint()
        assert str(module.resolve()) in before
        assert changed_files(before) == []
        time.sleep(0.01)
        module.write_text("X = 22\n")
        assert changed_files(before) == [str(module.resolve())]
    finally:
        sys.modules.pop("fresh_probe_module", None)
    assert not any("site-packages" in path for path in before)  # installed packages are not watched


def test_worker_identity_survives_neither_exit_nor_pid_reuse():
    me = WorkerRef(os.getpid(), process_start_time(os.getpid()) or "", socket.gethostname())
    assert me.alive()
    assert not WorkerRef(os.getpid(), "1", me.host).alive()  # same pid, another process
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not WorkerRef(child.pid, "", me.host).alive()
    assert WorkerRef.from_tags(me.tags()) == me and WorkerRef.from_tags({}) is None


def test_launcher_config_is_validated():
    with pytest.raises(ValueError, match="spares"):
        WarmRunLauncher(spares=-1)
    with pytest.raises(ValueError, match="max_spare_age_seconds"):
        WarmRunLauncher(max_spare_age_seconds=0)
