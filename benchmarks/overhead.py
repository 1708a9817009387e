"""Orchestration overhead per scan through the real daemon (local profile).

For each scan: time from the file becoming complete (its final rename) to its reconstruction job
being submitted, minus the time spent copying it. Scans arrive every ``--interval`` seconds;
median and p90 over ``--scans`` scans. Everything runs as in production: ``dagster-daemon`` +
``dagster-webserver`` on a fresh SQLite DAGSTER_HOME, the arrival sensor, the dagster.yaml of
the repository.

Usage: python benchmarks/overhead.py [--scans 20] [--interval 10] [--settle 2]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg
from dagster._core.instance.ref import InstanceRef

from cosmic_dagster.config import Settings
from cosmic_dagster.ledger import Ledger
from cosmic_dagster.progress import scan_progress
from cosmic_dagster.ptycho.simulate import SimulationSpec, cosmic_relpath, write_scan
from cosmic_dagster.scans import scan_key
from cosmic_dagster.services import DagsterServices, free_port, prepare_home


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=2.0, help="COSMIC_SETTLE_SECONDS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        home = base / "dagster_home"
        prepare_home(home)
        env = {
            **os.environ,
            "DAGSTER_HOME": str(home),
            "COSMIC_DATA_ROOT": str(base / "data"),
            "COSMIC_SETTLE_SECONDS": str(args.settle),
        }
        settings = Settings.from_env(env)
        services = DagsterServices(env=env, log_dir=base / "logs", port=free_port())
        services.start()
        try:
            instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
            time.sleep(10)  # let the sensor settle into its loop
            completed: dict[str, float] = {}
            keys = []
            day = dt.date.today()
            for i in range(args.scans):
                relpath = cosmic_relpath(day, i + 1)
                write_scan(settings.beamline_root / relpath, SimulationSpec.tiny(seed=i))
                key = scan_key(relpath)
                completed[key] = time.time()
                keys.append(key)
                if i < args.scans - 1:
                    time.sleep(args.interval)
            deadline = time.time() + 300
            while time.time() < deadline:
                progress = scan_progress(instance, keys)
                if all("reconstruction" in p.metadata for p in progress.values()):
                    break
                time.sleep(2)
            ledger = Ledger(settings.state_dir / "ledger.sqlite")
            jobs = {rec["job_id"]: rec["submitted_at"] for rec in ledger.all("job").values()}
            overheads = []
            print(f"{'scan':<30} {'to submit s':>11} {'copy s':>7} {'overhead s':>10}")
            for key in keys:
                meta = progress[key].metadata
                submitted = jobs[meta["reconstruction"]["job_id"]]
                copy_s = meta["nersc_copy"]["seconds"]
                overhead = submitted - completed[key] - copy_s
                overheads.append(overhead)
                print(f"{key:<30} {submitted - completed[key]:>11.2f} {copy_s:>7.3f} {overhead:>10.2f}")
        finally:
            services.stop()
    median, p90 = statistics.median(overheads), percentile(overheads, 0.9)
    print(
        f"median {median:.2f} s, p90 {p90:.2f} s over {len(overheads)} scans every {args.interval:g} s "
        f"(settle {args.settle:g} s)"
    )
    print(f"RESULT overhead_median_s={median:.2f} overhead_p90_s={p90:.2f}")


if __name__ == "__main__":
    main()
