"""Reconciliation cost against archive size: listing and classifying 1k and 100k archived scans.

What the reconcile job does, measured part by part on real data:

* listing + classification: :func:`cosmic_dagster.pipeline.reconcile.reconcile` over a real
  directory tree (empty files in ``YYYY/MM/YYMMDD`` folders of 500 scans), every scan registered
  and reconstructed except 100 missing ones (the job's common case: almost everything done);
* the same over the Globus emulator (the agent profile, ``COSMIC_ARRIVALS=globus``), with Globus'
  own rate limit (20 requests/s per user) and pages of 1000 entries;
* the instance queries the job makes (partitions, materialized partitions of two assets) on a
  Dagster instance holding that many partitions and ``--materialized`` materializations (writing
  100k materializations one event at a time takes ~10 min on this machine, so fewer are written).

Usage: python benchmarks/reconcile_scale.py [--sizes 1000 100000] [--repeats 3] [--no-globus]
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

from cosmic_dagster import names
from cosmic_dagster.domain.arrivals import DirectoryLister, Lister
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.pipeline.reconcile import MISSING, Known, reconcile

FIRST_DAY = dt.date(2020, 1, 1)
CLIENT = ("bench-client", "bench-secret")
BEAMLINE_ID = "44ae904c-ab64-4145-a8f0-7287de38324d"


def build_archive(root: Path, n: int, per_day: int = 500) -> list[str]:
    """``n`` empty scan files, ``per_day`` per day folder; returns their relative paths."""
    old = time.time() - 3600
    relpaths, day = [], FIRST_DAY
    while len(relpaths) < n:
        folder = f"{day:%Y/%m/%y%m%d}"
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(min(per_day, n - len(relpaths))):
            relpath = f"{folder}/NS_{day:%y%m%d}{i % 1000:03d}_ccdframes_{i // 1000}_0.cxi"
            (root / relpath).touch()
            os.utime(root / relpath, (old, old))
            relpaths.append(relpath)
        day += dt.timedelta(days=1)
    return relpaths


def known_for(relpaths: list[str], missing: int) -> Known:
    done = [scan_key(r) for r in relpaths[: len(relpaths) - missing]]
    return Known(
        partitions=done, registered=done, reconstructed=done, quarantined=(), planned=lambda k: False
    )


def time_reconcile(lister: Lister, known: Known, repeats: int, expect_missing: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        report = reconcile(
            lister, known, start=FIRST_DAY, end=dt.date(2030, 1, 1), now=time.time(), settle_seconds=2
        )
        times.append(time.perf_counter() - started)
        assert report.counts()[MISSING] == expect_missing, report.counts()
    return statistics.median(times)


def time_globus(root: Path, known: Known, expect_missing: int) -> float:
    from cosmic_dagster.emulators.globus.server import EmulatorServer
    from cosmic_dagster.transfer.globus.endpoints import Endpoint
    from cosmic_dagster.transfer.globus.listing import GlobusLister
    from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, make_transfer_client

    with EmulatorServer({BEAMLINE_ID: root}, dict([CLIENT])) as emu:
        client = make_transfer_client(
            GlobusCredentials(*CLIENT), transfer_base_url=emu.url, auth_base_url=emu.url
        )
        lister = GlobusLister(client, Endpoint(name="data7012", uuid=BEAMLINE_ID, root_path="/"))
        return time_reconcile(lister, known, 1, expect_missing)


def time_instance_queries(n_partitions: int, n_materialized: int, repeats: int) -> float:
    with tempfile.TemporaryDirectory() as home, dg.DagsterInstance.local_temp(home) as instance:
        keys = [f"scan{i:06d}" for i in range(n_partitions)]
        for start in range(0, len(keys), 10_000):
            instance.add_dynamic_partitions(names.PARTITIONS, keys[start : start + 10_000])
        for key in keys[:n_materialized]:
            for asset in (names.RAW_SCAN, names.RECONSTRUCTION):
                instance.report_runless_asset_event(dg.AssetMaterialization(asset, partition=key))
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            assert len(instance.get_dynamic_partitions(names.PARTITIONS)) == n_partitions
            for asset in (names.RAW_SCAN, names.RECONSTRUCTION):
                assert len(instance.get_materialized_partitions(dg.AssetKey(asset))) == n_materialized
            times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--missing", type=int, default=100)
    parser.add_argument("--materialized", type=int, default=2000)
    parser.add_argument("--no-globus", action="store_true")
    args = parser.parse_args()
    local: dict[int, float] = {}
    globus: dict[int, float] = {}
    queries: dict[int, float] = {}
    header = ("archived", "local list+classify s", "Globus list+classify s", "instance queries s")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (9, 22, 23, 19), strict=True)))
    for n in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            relpaths = build_archive(root, n)
            known = known_for(relpaths, args.missing)
            local[n] = time_reconcile(DirectoryLister(root), known, args.repeats, args.missing)
            if not args.no_globus:
                globus[n] = time_globus(root, known, args.missing)
        queries[n] = time_instance_queries(n, min(args.materialized, n), args.repeats)
        shown = f"{globus[n]:>23.2f}" if n in globus else f"{'-':>23}"
        print(f"{n:>9} {local[n]:>22.3f} {shown} {queries[n]:>19.3f}")
    big, small = max(local), min(local)
    per_1k = local[big] / big * 1000
    print(
        f"local: {per_1k:.4f} s per 1k files at {big}; ratio {big}/{small}: {local[big] / local[small]:.1f}"
    )
    fields = [f"reconcile_local_s_{big}={local[big]:.3f}", f"instance_queries_s_{big}={queries[big]:.3f}"]
    if big in globus:
        fields.append(f"reconcile_globus_s_{big}={globus[big]:.2f}")
    print("RESULT " + " ".join(fields))


if __name__ == "__main__":
    main()
