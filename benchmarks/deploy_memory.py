"""Memory of the production deployment with 50 scans in flight, and recovery after a daemon crash.

The deployment is ``cosmic-dagster deploy up``'s: PostgreSQL (a fresh database), the code server
(with its run workers), the daemon and the webserver, ``nersc`` profile against the loopback
Globus and SFAPI emulators (not counted: at a beamline they are Globus and NERSC). Jobs stay
queued in the emulated Slurm so that all scans are in flight at once.

* **Memory**: every process of the deployment (the three Dagster processes, their children, and
  the PostgreSQL backends serving this database), sampled each second for ``--sample-s`` once all
  scans have a job; peak of the sum. RSS counts pages shared between processes once per process
  (an upper bound); PSS shares them out (what the processes really cost together). Two batchings
  side by side: the default (``COSMIC_MAX_SCANS_PER_RUN=20``: 3 runs) and one scan per run (the
  worst case: 8 concurrent runs, the queue's limit, each in its own run worker).
* **Recovery**: with scans flowing, SIGKILL the daemon's whole process group, write a scan while it
  is down, start it again; time from the restart until that scan's run has started (sensor tick,
  launch, run worker up). Median over ``--repeats``.

Usage: python benchmarks/deploy_memory.py [--scans 50] [--sample-s 10] [--repeats 5]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import dagster as dg

from cosmic_dagster import names
from cosmic_dagster.cli.deployment import PostgresSettings, open_instance, pool_limits, start_deployment
from cosmic_dagster.cli.services import DagsterServices, free_port
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler
from cosmic_dagster.emulators.site import LoopbackSite
from cosmic_dagster.ptycho.simulate import SimulationSpec, cosmic_relpath, write_scan

DAY = dt.date.today()


def wait(what: str, predicate: Callable[[], bool], timeout_s: float = 300.0, poll_s: float = 0.2) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(poll_s)
    raise TimeoutError(f"timed out waiting for {what}")


def descendants(roots: Iterable[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo += children.get(pid, [])
    return found


def memory_kb(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in kB of one process; (0, 0) if it is gone."""
    try:
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return 0, 0
    fields = {line.split(":")[0]: int(line.split()[1]) for line in rollup[1:] if line.split()[1:]}
    return fields.get("Rss", 0), fields.get("Pss", 0)


def deployment_pids(services: DagsterServices, pg: PostgresSettings) -> set[int]:
    with pg.admin() as cur:
        cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (pg.db,))
        backends = {row[0] for row in cur.fetchall()}
    return descendants(p.pid for p in services.procs.values()) | backends


class Deployment:
    """A fresh database, the three processes and the loopback site under ``base``."""

    def __init__(self, base: Path, scheduler: SimulatedScheduler, extra_env: dict[str, str]):
        self.site = LoopbackSite(base, scheduler)
        self.pg = PostgresSettings.from_env({**os.environ, "DAGSTER_PG_DB": f"cosmic_bench_{os.getpid()}"})
        self.pg.drop_database()
        env = {
            **os.environ,
            **self.pg.env(),
            **self.site.env,
            "COSMIC_DATA_ROOT": str(base / "data"),
            "COSMIC_SETTLE_SECONDS": "0.5",
            **extra_env,
        }
        self.services = start_deployment(base, port=free_port(), code_port=free_port(), env=env)
        self.instance = open_instance(Path(self.services.env["DAGSTER_HOME"]), self.pg)
        self.beamline = base / "data" / "beamline"
        self.number = 0

    def scan(self) -> str:
        self.number += 1
        relpath = cosmic_relpath(DAY, self.number)
        write_scan(self.beamline / relpath, SimulationSpec.tiny(seed=self.number))
        return scan_key(relpath)

    def close(self) -> None:
        self.services.stop()
        self.instance.dispose()
        self.site.stop()
        self.pg.drop_database()


def measure_memory(args: argparse.Namespace, per_run: int) -> tuple[float, float, int]:
    """Peak (RSS MB, PSS MB, processes) with ``args.scans`` scans in flight."""
    with tempfile.TemporaryDirectory(prefix="deploy-memory-") as tmp:
        # Jobs wait in the queue far longer than the sampling: every scan stays in flight.
        scheduler = SimulatedScheduler(queue_wait_s=3600, spool_dir=Path(tmp) / "spool")
        dep = Deployment(Path(tmp), scheduler, {"COSMIC_MAX_SCANS_PER_RUN": str(per_run)})
        try:
            for _ in range(args.scans):
                dep.scan()
            # At most 8 runs at once (deploy/dagster.yaml), each holding a slurm-perlmutter slot.
            expected = min(args.scans, min(8, pool_limits()["slurm-perlmutter"]) * per_run)
            wait(
                f"{expected} jobs submitted",
                lambda: len(dep.site.sfapi.jobs()) >= expected,
                timeout_s=600,
                poll_s=1.0,
            )
            peak = (0.0, 0.0, 0)
            for _ in range(int(args.sample_s)):
                pids = deployment_pids(dep.services, dep.pg)
                rss, pss = map(sum, zip(*(memory_kb(p) for p in pids), strict=True))
                if rss > peak[0] * 1024:
                    peak = (rss / 1024, pss / 1024, len(pids))
                time.sleep(1.0)
            print(f"{per_run} scan(s) per run: peak RSS {peak[0]:.0f} MB, PSS {peak[1]:.0f} MB", flush=True)
            return peak
        finally:
            dep.close()


def measure_recovery(args: argparse.Namespace) -> list[float]:
    with tempfile.TemporaryDirectory(prefix="deploy-recovery-") as tmp:
        scheduler = SimulatedScheduler(queue_wait_s=0.5, min_run_s=2.0, spool_dir=Path(tmp) / "spool")
        dep = Deployment(Path(tmp), scheduler, {})
        try:
            times = []
            for _ in range(args.repeats):
                before = dep.scan()
                wait("a run started", lambda k=before: started(dep.instance, k))
                dep.services.stop_daemon(signal.SIGKILL)
                key = dep.scan()  # arrives while the daemon is down
                time.sleep(1.0)
                t0 = time.monotonic()
                dep.services.start_daemon()
                wait("the scan's run started after the restart", lambda k=key: started(dep.instance, k))
                times.append(time.monotonic() - t0)
            return times
        finally:
            dep.close()


def started(instance: dg.DagsterInstance, key: str) -> bool:
    """Some run covering ``key`` has reached STARTED (or finished)."""
    if key not in instance.get_dynamic_partitions(names.PARTITIONS):
        return False
    info = instance.get_latest_planned_materialization_info(dg.AssetKey(names.RAW_SCAN), partition=key)
    if info is None:
        return False
    run = instance.get_run_by_id(info.run_id)
    return run is not None and run.status not in (
        dg.DagsterRunStatus.QUEUED,
        dg.DagsterRunStatus.NOT_STARTED,
        dg.DagsterRunStatus.STARTING,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=int, default=50)
    parser.add_argument("--sample-s", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    batched = measure_memory(args, per_run=20)
    single = measure_memory(args, per_run=1)
    recovery = measure_recovery(args)

    print(f"\n{args.scans} scans in flight, peak over {args.sample_s:g} s of 1 s samples")
    print(f"{'batching':<24} {'processes':>9} {'RSS MB':>8} {'PSS MB':>8}")
    for name, (rss, pss, n) in (("20 scans per run", batched), ("1 scan per run", single)):
        print(f"{name:<24} {n:>9} {rss:>8.0f} {pss:>8.0f}")
    print(f"recovery after daemon SIGKILL (restart -> run started): {[round(t, 2) for t in recovery]} s")
    print(
        f"RESULT rss_total_mb={batched[0]:.0f} pss_total_mb={batched[1]:.0f} "
        f"rss_total_mb_one_scan_per_run={single[0]:.0f} pss_total_mb_one_scan_per_run={single[1]:.0f} "
        f"recovery_s={statistics.median(recovery):.2f}"
    )


if __name__ == "__main__":
    main()
