"""Crash recovery of the production shape (PostgreSQL, code server, daemon, webserver) with the
``nersc`` profile against the Globus and SFAPI emulators, scans in flight when things break.

Every test asserts the same outcome: every scan ends materialized or clearly failed, no scan is
lost, no Globus copy or Slurm job is made twice, and the failed ones succeed after one rerun.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import pytest

from cosmic_dagster import cli, names
from cosmic_dagster.cli.dagster_api import GraphQLError
from cosmic_dagster.cli.deployment import PostgresSettings
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler
from cosmic_dagster.instance.code_server_launcher import RETRY_WAIT
from tests.e2e.conftest import LiveInstance, start_deployed_instance
from tests.e2e.nersc_site import GLOBUS_SECRET, Site, scan_tasks, secret_free
from tests.webhook_receiver import TOKEN, Receiver

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

ASSETS = ("raw_scan", "nersc_copy", "reconstruction")
DOWN_S = 25.0  # longer than two of deploy/dagster.yaml's run monitoring polls (10 s)
PG_DOWN_S = 30.0  # longer than dagster-postgres retries a connection (6 tries over about 13 s)


@pytest.fixture
def webhook() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def deployed(tmp_path: Path, webhook: Receiver) -> Iterator[tuple[LiveInstance, Site]]:
    # Jobs take a few seconds and copies a second, so that crashes land while scans are in flight.
    scheduler = SimulatedScheduler(queue_wait_s=1.0, min_run_s=4.0, spool_dir=tmp_path / "spool")
    site = Site(tmp_path, scheduler, task_latency_s=1.0)
    try:
        live = start_deployed_instance(tmp_path, {**site.env, "COSMIC_ALERT_WEBHOOK_URL": webhook.url})
    except BaseException:
        site.stop()
        raise
    yield live, site
    live.stop()
    site.stop()


def jobs_in_flight(site: Site) -> bool:
    return any(job["state"] in ("PENDING", "RUNNING") for job in site.sfapi.jobs())


def run_worker_pids(live: LiveInstance) -> list[int]:
    """Processes the code server spawned to execute runs (multiprocessing children)."""
    server = live.services.procs["code_server"].pid
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == server and "spawn_main" in cmdline:
            pids.append(int(entry.name))
    return pids


def settled(live: LiveInstance, keys: list[str], quiet_s: float = 6.0, timeout_s: float = 300.0) -> set[str]:
    """Wait until every scan is checked or failed and no run is queued or running for ``quiet_s``
    (a failed run may still be retried); returns the failed scans."""
    busy = [
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
        dg.DagsterRunStatus.STARTED,
        dg.DagsterRunStatus.CANCELING,
    ]
    quiet_since: float | None = None
    failed: set[str] = set()

    def done() -> bool:
        nonlocal quiet_since, failed
        statuses = {asset: live.api.partition_statuses(asset) for asset in ASSETS}
        failed = {k for s in statuses.values() for k in s["failed"]} & set(keys)
        checked = {k for k, p in live.progress(keys).items() if p.stage == "checked" and p.passed}
        idle = not live.instance.get_runs(dg.RunsFilter(statuses=busy), limit=1)
        if not (idle and set(keys) == checked | failed):
            quiet_since = None
            return False
        quiet_since = quiet_since or time.monotonic()
        return time.monotonic() - quiet_since >= quiet_s

    try:
        live.wait_for("every scan checked or failed, no run active", done, timeout_s)
    except AssertionError as timed_out:
        raise AssertionError(f"{where_scans_stand(live, keys)}\n{timed_out}") from None
    return failed


def where_scans_stand(live: LiveInstance, keys: list[str]) -> str:
    """Each scan's stage and checks, and every run's status: what a timed-out wait could not reach."""
    scans = [f"{k}: {p.stage} {p.checks}" for k, p in live.progress(keys).items()]
    quality = dg.AssetCheckKey(dg.AssetKey(names.RECONSTRUCTION), names.QUALITY_CHECK)
    checks = [
        f"{c.partition} {c.status.value} run {c.run_id[:8]}"
        for c in live.instance.event_log_storage.get_asset_check_execution_history(quality, limit=100)
    ]
    runs = [f"{r.run_id[:8]} {r.status.value} {dict(r.tags)}" for r in live.instance.get_runs()]
    return "\n".join(["scans:", *scans, "quality check executions:", *checks, "runs:", *runs])


def rerun(live: LiveInstance, failed: set[str]) -> None:
    """The operator's one action, ``cosmic-dagster rerun-failed``, then every scan is checked."""
    if not failed:
        return
    assert cli.main(["rerun-failed", "--url", live.services.url]) == 0
    keys = sorted(live.instance.get_dynamic_partitions("scans"))
    assert settled(live, keys) == set(), "a scan still failed after one rerun"


def assert_each_scan_once(site: Site, keys: list[str]) -> None:
    """One Globus copy and one Slurm job per scan, whatever crashed in between."""
    tasks = scan_tasks(site)
    assert len({t["submission_id"] for t in tasks}) == len(tasks)
    assert sum(t["files"] for t in tasks if t["status"] == "SUCCEEDED") == len(keys), tasks
    names = [job["name"] for job in site.sfapi.jobs()]
    assert len(names) == len(set(names)) == len(keys), names


def test_daemon_sigkill_then_restart(deployed):
    live, site = deployed
    keys = [scan_key(live.beamline.scan()) for _ in range(3)]
    live.wait_for("jobs in flight", lambda: jobs_in_flight(site))
    daemon = live.services.procs["daemon"]
    os.killpg(daemon.pid, signal.SIGKILL)  # the whole daemon, as a container crash would
    daemon.wait()
    keys += [scan_key(live.beamline.scan()) for _ in range(2)]  # arrive while it is down
    assert live.services.restart_exited() == ["daemon"]  # what `deploy up` does every 2 s
    rerun(live, settled(live, keys))
    assert sorted(live.instance.get_dynamic_partitions("scans")) == sorted(keys)
    assert_each_scan_once(site, keys)
    secret_free(live, [GLOBUS_SECRET, site.private_pem.splitlines()[1]])


def test_run_worker_sigkill_is_retried_and_reattaches_and_alerts(deployed, webhook):
    live, site = deployed
    keys = [scan_key(live.beamline.scan()) for _ in range(2)]
    live.wait_for("jobs in flight", lambda: jobs_in_flight(site) and run_worker_pids(live))
    os.kill(run_worker_pids(live)[0], signal.SIGKILL)
    rerun(live, settled(live, keys))
    retries = live.instance.get_runs(dg.RunsFilter(tags={"dagster/retry_number": "1"}))
    assert retries, "the run whose worker died was not retried"
    assert_each_scan_once(site, keys)
    # The daemon's alert sensor posted the crashed run: its scans and a link to it.
    crashed = retries[0].tags["dagster/parent_run_id"]
    live.wait_for("the failure alert", lambda: any(a["run_id"] == crashed for a in webhook.delivered), 60)
    alert = next(a for a in webhook.delivered if a["run_id"] == crashed)
    assert alert["link"].endswith(f"/runs/{crashed}") and set(alert["scan_range"]) & set(keys)
    secret_free(live, [GLOBUS_SECRET, site.private_pem.splitlines()[1], TOKEN])


def test_code_server_restart_fails_and_retries_its_runs(deployed):
    live, site = deployed
    keys = [scan_key(live.beamline.scan()) for _ in range(2)]
    live.wait_for("jobs in flight", lambda: jobs_in_flight(site))
    live.services.stop_code_server(signal.SIGKILL)  # with its run workers, as a container restart
    time.sleep(DOWN_S)  # down across run monitoring polls, as a container being replaced
    live.wait_for(
        "the webserver to give the code server up", lambda: live.api.location_error() is not None, 60
    )
    unloaded = r"has not loaded code location 'cosmic_dagster': .* \(is the code server up\?\)"
    with pytest.raises(GraphQLError, match=unloaded):
        live.api.partition_statuses("raw_scan")  # what `cosmic-dagster status` tells the operator
    live.services.start_code_server()
    # The webserver had given the server up; until it reloads it, every asset is "not found".
    live.wait_for("the webserver to reload the code location", lambda: live.api.location_error() is None, 60)
    # Dagster retries a run once, at once: failed while the server was down (or before the
    # daemon reloaded it), the retry would be lost and the scans left to the operator.
    assert settled(live, keys) == set(), "the dead code server's scans were not retried to success"
    retries = live.instance.get_runs(dg.RunsFilter(tags={"dagster/retry_number": "1"}))
    assert retries, "the runs of the dead code server were not failed and retried"
    parents = [live.instance.get_run_by_id(r.tags["dagster/parent_run_id"]) for r in retries]
    assert all(p is not None and p.status == dg.DagsterRunStatus.FAILURE for p in parents)
    told = [
        e.dagster_event.message or ""
        for p in parents
        if p
        for e in live.instance.all_logs(p.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
        if e.dagster_event
    ]
    assert any(RETRY_WAIT in m for m in told), told
    assert_each_scan_once(site, keys)


def test_postgres_connections_dropped_mid_flight(deployed):
    live, site = deployed
    keys = [scan_key(live.beamline.scan()) for _ in range(3)]
    live.wait_for("jobs in flight", lambda: jobs_in_flight(site))
    assert live.pg is not None
    # What clients see when PostgreSQL restarts: their sessions killed mid-query. Connections live
    # only as long as a query (dagster-postgres does not pool), so kill every session 20 times a
    # second for at least 8 s, and on until a few were caught.
    dropped, start = 0, time.monotonic()
    while time.monotonic() - start < 8 or (dropped < 3 and time.monotonic() - start < 30):
        dropped += live.pg.drop_connections()
        time.sleep(0.05)
    assert dropped > 0
    keys += [scan_key(live.beamline.scan())]  # and the deployment still takes new scans
    rerun(live, settled(live, keys))
    assert_each_scan_once(site, keys)


@contextmanager
def postgres_down(pg: PostgresSettings) -> Iterator[None]:
    """The database away, as while PostgreSQL restarts: sessions killed, new connections refused."""
    with pg.admin() as cur:
        cur.execute(f'ALTER DATABASE "{pg.db}" ALLOW_CONNECTIONS false')
    pg.drop_connections()
    try:
        yield
    finally:
        with pg.admin() as cur:
            cur.execute(f'ALTER DATABASE "{pg.db}" ALLOW_CONNECTIONS true')


def test_run_worker_dying_while_postgres_is_down_is_failed_and_retried_once_it_is_back(deployed):
    """The code server can fail a dead worker's run only through the database; its watch must
    outlive the outage (Dagster's stops at the first database error, leaving the run STARTED)."""
    live, site = deployed
    keys = [scan_key(live.beamline.scan())]
    live.wait_for("jobs in flight", lambda: jobs_in_flight(site) and run_worker_pids(live))
    assert live.pg is not None
    with postgres_down(live.pg):
        os.kill(run_worker_pids(live)[0], signal.SIGKILL)
        time.sleep(PG_DOWN_S)
    assert settled(live, keys) == set(), "the dead worker's scan was not retried to success"
    retries = live.instance.get_runs(dg.RunsFilter(tags={"dagster/retry_number": "1"}))
    assert retries, "the run whose worker died was not retried"
    assert_each_scan_once(site, keys)
