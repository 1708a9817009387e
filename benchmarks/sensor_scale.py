"""Sensor tick time against archive size: 1k and 100k archived scans plus 10 new ones.

Each tick is the real sensor function (``scan_arrival_sensor``) evaluated with
``build_sensor_context`` on an ephemeral instance, reading a real directory tree. Reported: the
median tick that finds 10 new scans and the median idle tick, per archive size, in steady state
(the recent day folders already in the cursor).

Usage: python benchmarks/sensor_scale.py [--sizes 1000 100000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import dagster as dg

from cosmic_dagster import names
from cosmic_dagster.config import Settings
from cosmic_dagster.definitions import build_definitions
from cosmic_dagster.defs.profiles import resources_for


def build_archive(root: Path, n_archived: int, per_day: int = 500) -> None:
    """``n_archived`` scan files in old day folders (empty files: listing cost is what matters)."""
    old = time.time() - 3600
    day = dt.date(2020, 1, 1)
    written = 0
    while written < n_archived:
        folder = root / f"{day:%Y/%m/%y%m%d}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(min(per_day, n_archived - written)):
            path = folder / f"NS_{day:%y%m%d}{i % 1000:03d}_ccdframes_{i // 1000}_0.cxi"
            path.touch()
            os.utime(path, (old, old))
        written += min(per_day, n_archived - written)
        day += dt.timedelta(days=1)


def add_new(root: Path, n_new: int, first: int) -> None:
    folder = root / "2026/11/261125"
    folder.mkdir(parents=True, exist_ok=True)
    old = time.time() - 60
    for i in range(first, first + n_new):
        path = folder / f"NS_261125{i + 1:03d}_ccdframes_0_0.cxi"
        path.write_bytes(b"x")
        os.utime(path, (old, old))


def catch_up(sensor: dg.SensorDefinition, instance: dg.DagsterInstance, resources: dict) -> str | None:
    """Tick until the archive's recent folders are in the cursor (the steady state of a beamline)."""
    cursor = None
    while True:
        context = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
        result = sensor(context)
        if isinstance(result, dg.SkipReason):
            return context.cursor
        instance.add_dynamic_partitions(
            names.PARTITIONS, result.dynamic_partitions_requests[0].partition_keys
        )
        cursor = result.cursor


def measure(n_archived: int, repeats: int) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings.from_env({"COSMIC_DATA_ROOT": tmp})
        build_archive(settings.beamline_root, n_archived)
        sensor = build_definitions(settings).resolve_sensor_def(names.ARRIVAL_SENSOR)
        resources = resources_for(settings)
        with dg.DagsterInstance.ephemeral() as instance:
            cursor = catch_up(sensor, instance, resources)
            new_ticks, idle = [], []
            for batch in range(repeats):  # 10 new scans per tick, as they would arrive
                add_new(settings.beamline_root, 10, first=10 * batch)
                started = time.perf_counter()
                context = dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor)
                result = sensor(context)
                new_ticks.append(time.perf_counter() - started)
                keys = result.dynamic_partitions_requests[0].partition_keys
                assert len(keys) == 10
                instance.add_dynamic_partitions(names.PARTITIONS, keys)
                cursor = result.cursor
            for _ in range(repeats):
                started = time.perf_counter()
                sensor(dg.build_sensor_context(instance=instance, resources=resources, cursor=cursor))
                idle.append(time.perf_counter() - started)
    return statistics.median(new_ticks), statistics.median(idle)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    results = {}
    print(f"{'archived':>9} {'tick with 10 new, median s':>27} {'idle tick median s':>19}")
    logging.disable(logging.INFO)  # the sensor logs every tick
    for n in args.sizes:
        with_new, idle = measure(n, args.repeats)
        results[n] = with_new
        print(f"{n:>9} {with_new:>27.4f} {idle:>19.4f}")
    small, large = results[min(results)], results[max(results)]
    print(f"ratio {max(results)}/{min(results)}: {large / small:.2f} (flat = ~1)")
    print(f"RESULT tick_s_1k={small:.4f} tick_s_100k={large:.4f}")


if __name__ == "__main__":
    main()
