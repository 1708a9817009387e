"""Orchestration overhead per scan through the real daemon (local profile), setups side by side.

For each scan: time from the file becoming complete (its final rename) to its reconstruction job
being submitted, minus the time spent copying it. Scans arrive every ``--interval`` seconds;
median and p90 over ``--scans`` scans, after one warm-up scan that is not counted (steady state:
the first run after a daemon start is a one-off). Everything runs as in production:
``dagster-daemon`` + ``dagster-webserver`` on a fresh SQLite DAGSTER_HOME per setup.

Setups (``--setups``, default ``sensor,fast``):

* ``sensor``: the arrival sensor alone, Dagster's DefaultRunLauncher (a fresh run worker per run).
* ``fast``: the repository's dagster.yaml (WarmRunLauncher) + ``cosmic-dagster watch``; the sensor
  waits ``COSMIC_SENSOR_GRACE_S`` (30 s) and is only the safety net. The default deployment.
* ``fast-default-coordinator``: as ``fast`` but DefaultRunCoordinator (no queue: launched at once).
* ``watch-cold``: the watcher with Dagster's DefaultRunLauncher (what the warm workers add).

Each scan is written like a detector writes it: ``<name>.tmp`` for ``--write-seconds``, then
renamed; "complete" is the rename. ``--write-seconds 0`` writes at once (the watcher then cannot
see the rename and waits ``--settle`` like the sensor).

Usage: python benchmarks/overhead.py [--scans 20] [--interval 10] [--settle 2] [--write-seconds 1]
       [--setups sensor,fast]
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import yaml
from dagster._core.instance.ref import InstanceRef

from cosmic_dagster import names
from cosmic_dagster.cli.services import INSTANCE_YAML, DagsterServices, free_port, prepare_home
from cosmic_dagster.config import Settings
from cosmic_dagster.defs.progress import scan_progress
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.ptycho.simulate import SimulationSpec, cosmic_relpath, write_scan

GRACE_S = "30"


@dataclass(frozen=True)
class Setup:
    name: str
    watcher: bool
    warm_launcher: bool
    default_coordinator: bool = False


SETUPS = {
    s.name: s
    for s in (
        Setup("sensor", watcher=False, warm_launcher=False),
        Setup("fast", watcher=True, warm_launcher=True),
        Setup("fast-default-coordinator", watcher=True, warm_launcher=True, default_coordinator=True),
        Setup("watch-cold", watcher=True, warm_launcher=False),
    )
}


@dataclass
class Measured:
    overheads: list[float]
    duplicates: int

    @property
    def median(self) -> float:
        return statistics.median(self.overheads)

    @property
    def p90(self) -> float:
        return percentile(self.overheads, 0.9)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def instance_yaml(setup: Setup, directory: Path) -> Path:
    config = yaml.safe_load((INSTANCE_YAML / "dagster.yaml").read_text())
    if not setup.warm_launcher:
        config.pop("run_launcher", None)
    if setup.default_coordinator:
        config["run_coordinator"] = {
            "module": "dagster.core.run_coordinator",
            "class": "DefaultRunCoordinator",
        }
    path = directory / f"dagster-{setup.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def launched_keys(instance: dg.DagsterInstance) -> Counter[str]:
    """How many first launches (retries excluded) covered each scan key."""
    order = instance.get_dynamic_partitions(names.PARTITIONS)
    counts: Counter[str] = Counter()
    for run in instance.get_runs(dg.RunsFilter(job_name=names.SCAN_JOB)):
        tags = run.tags
        if names.TAG_PARENT_RUN in tags:
            continue
        if names.TAG_PARTITION in tags:
            counts[tags[names.TAG_PARTITION]] += 1
        elif names.TAG_RANGE_START in tags:
            start = order.index(tags[names.TAG_RANGE_START])
            counts.update(order[start : order.index(tags[names.TAG_RANGE_END]) + 1])
    return counts


def measure(setup: Setup, args: argparse.Namespace, base: Path) -> Measured:
    home = base / "dagster_home"
    prepare_home(home, instance_yaml(setup, base))
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "COSMIC_DATA_ROOT": str(base / "data"),
        "COSMIC_SETTLE_SECONDS": str(args.settle),
        "COSMIC_SENSOR_GRACE_S": GRACE_S if setup.watcher else "0",
    }
    settings = Settings.from_env(env)
    settings.beamline_root.mkdir(parents=True, exist_ok=True)
    services = DagsterServices(env=env, log_dir=base / "logs", port=free_port())
    services.start()
    watcher = None
    try:
        if setup.watcher:
            watcher = subprocess.Popen(
                [sys.executable, "-m", "cosmic_dagster.cli.main", "watch", "--url", services.url],
                env=env,
                stdout=open(base / "logs" / "watch.log", "ab"),  # noqa: SIM115 - owned by the child
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
        time.sleep(10)  # let the sensor settle into its loop
        day = dt.date.today()
        completed: dict[str, float] = {}
        keys = []
        started = time.time()
        for i in range(args.scans + 1):
            time.sleep(max(0.0, started + i * args.interval - time.time()))  # one scan every interval
            relpath = cosmic_relpath(day, i + 1)
            spec = SimulationSpec.tiny(seed=i)
            rate = spec.n_side**2 / args.write_seconds if args.write_seconds > 0 else None
            write_scan(settings.beamline_root / relpath, spec, frame_rate_hz=rate)
            key = scan_key(relpath)
            completed[key] = time.time()
            keys.append(key)
        deadline = time.time() + 300
        while time.time() < deadline:
            progress = scan_progress(instance, keys)
            if all(names.RECONSTRUCTION in p.metadata for p in progress.values()):
                break
            time.sleep(2)
        ledger = Ledger(settings.state_dir / "ledger.sqlite")
        jobs = {rec["job_id"]: rec["submitted_at"] for rec in ledger.all("job").values()}
        counts = launched_keys(instance)
        overheads = []
        print(f"\n[{setup.name}]\n{'scan':<30} {'to submit s':>11} {'copy s':>7} {'overhead s':>10}")
        for n, key in enumerate(keys):
            meta = progress[key].metadata
            submitted = jobs[meta[names.RECONSTRUCTION]["job_id"]]
            copy_s = meta[names.NERSC_COPY]["seconds"]
            overhead = submitted - completed[key] - copy_s
            warmup = "  (warm-up, not counted)" if n == 0 else ""
            print(f"{key:<30} {submitted - completed[key]:>11.2f} {copy_s:>7.3f} {overhead:>10.2f}{warmup}")
            if n > 0:
                overheads.append(overhead)
        return Measured(overheads, duplicates=sum(c - 1 for c in counts.values() if c > 1))
    finally:
        if watcher is not None:
            watcher.send_signal(signal.SIGTERM)
            watcher.wait(20)
        services.stop()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--settle", type=float, default=2.0, help="COSMIC_SETTLE_SECONDS")
    parser.add_argument(
        "--write-seconds",
        type=float,
        default=1.0,
        help="how long the simulated detector takes to write a scan (0: as fast as possible)",
    )
    parser.add_argument("--setups", default="sensor,fast", help=f"comma-separated, of {', '.join(SETUPS)}")
    args = parser.parse_args()
    names = [n.strip() for n in args.setups.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETUPS]
    if unknown or not names:
        parser.error(f"unknown setup(s) {unknown}; choose from {', '.join(SETUPS)}")
    results: dict[str, Measured] = {}
    for name in names:
        with tempfile.TemporaryDirectory(prefix=f"overhead-{name}-") as tmp:
            results[name] = measure(SETUPS[name], args, Path(tmp))
    print(
        f"\n{args.scans} scans every {args.interval:g} s, each written in {args.write_seconds:g} s "
        f"(.tmp, then renamed), settle {args.settle:g} s"
    )
    print(f"{'setup':<26} {'median s':>9} {'p90 s':>7} {'duplicate launches':>19}")
    for name, m in results.items():
        print(f"{name:<26} {m.median:>9.2f} {m.p90:>7.2f} {m.duplicates:>19}")
    head = results.get("fast") or next(iter(results.values()))
    keys = [f"overhead_median_s={head.median:.2f}", f"overhead_p90_s={head.p90:.2f}"]
    for name, m in results.items():
        if m is not head:
            prefix = name.replace("-", "_")
            keys += [f"{prefix}_overhead_median_s={m.median:.2f}", f"{prefix}_overhead_p90_s={m.p90:.2f}"]
    keys.append(f"duplicates={sum(m.duplicates for m in results.values())}")
    print("RESULT " + " ".join(keys))


if __name__ == "__main__":
    main()
