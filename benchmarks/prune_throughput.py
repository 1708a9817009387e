"""Prune throughput: scans verified and deleted per minute, local profile and Globus emulator.

Each mode copies ``--scans`` real files of ``--size`` bytes, registers them (as ``raw_scan``
would: size, mtime, sha256 in the ledger), then runs :class:`~cosmic_dagster.pipeline.prune.Pruner`
with ``delete=True``: every condition checked, each copy re-verified (local: a re-hash of the
copy; Globus: one checksum-sync transfer task over the batch that must move nothing, checksums
computed on both sides by the emulator), one delete (local ``unlink`` / one Globus delete task),
the ledger compacted. Timed: the prune run alone. The emulator runs in process, with Globus'
request rate limit and its default task start latency of 0.

Usage: python benchmarks/prune_throughput.py [--scans 200] [--size 1048576] [--repeats 3]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.pipeline.prune import DELETED, PrunePolicy, Pruner, ScanFacts
from cosmic_dagster.pipeline.stages import REGISTRATION, Registration
from cosmic_dagster.transfer.local import LocalTransfer
from cosmic_dagster.transfer.protocol import Transfer, TransferItem

BEAMLINE_ID = "44ae904c-ab64-4145-a8f0-7287de38324d"
NERSC_ID = "df82346e-9a15-11ea-b3c4-0ae144191ee3"
CLIENT = ("bench-client", "bench-secret")
OLD = time.time() - 60 * 86_400


def make_scans(root: Path, n: int, size: int) -> list[TransferItem]:
    items = []
    for i in range(n):
        day = f"2409{1 + i // 500:02d}"
        relpath = f"2024/09/{day}/NS_{day}{i % 500:03d}_ccdframes_0_0.cxi"
        data = hashlib.shake_256(relpath.encode()).digest(size)
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        os.utime(path, (OLD, OLD))
        items.append(
            TransferItem(
                f"NS_{day}{i % 500:03d}_ccdframes_0_0", relpath, size, hashlib.sha256(data).hexdigest()
            )
        )
    return items


def prune_once(workdir: Path, n: int, size: int, adapter: Callable[[Path, Ledger], Transfer]) -> float:
    beamline = workdir / "beamline"
    items = make_scans(beamline, n, size)
    ledger = Ledger(workdir / "ledger.sqlite")
    transfer = adapter(workdir, ledger)
    assert all(o.ok for o in transfer.copy_batch(items, "bench").outcomes.values())
    for item in items:
        reg = Registration(item.key, item.relpath, item.size, item.sha256, OLD, {})
        ledger.put(REGISTRATION, item.key, asdict(reg))
    facts = {item.key: ScanFacts(copied=True, copy_check=True, reconstructed=True) for item in items}
    started = time.perf_counter()
    report = Pruner(ledger, transfer, PrunePolicy(retention_days=30)).run(facts, now=time.time(), delete=True)
    seconds = time.perf_counter() - started
    deleted = sum(d.action == DELETED for d in report.decisions)
    assert deleted == n, report.table()
    return seconds


def local_adapter(workdir: Path, ledger: Ledger) -> Transfer:
    return LocalTransfer(workdir / "beamline", workdir / "nersc")


def globus_adapter_factory(emu_url: str) -> Callable[[Path, Ledger], Transfer]:
    from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, GlobusTransfer

    def make(workdir: Path, ledger: Ledger) -> Transfer:
        endpoints = workdir / "endpoints.yml"
        endpoints.write_text(
            "globus:\n  globus_endpoints:\n"
            f"    data7012: {{root_path: {workdir / 'beamline'}, uuid: {BEAMLINE_ID}}}\n"
            f"    nersc7012: {{root_path: {workdir / 'nersc'}, uuid: {NERSC_ID}}}\n"
        )
        return GlobusTransfer.from_config(
            endpoints,
            "data7012",
            "nersc7012",
            GlobusCredentials(*CLIENT),
            ledger,
            poll_interval_s=0.5,
            transfer_base_url=emu_url,
            auth_base_url=emu_url,
        )

    return make


def measure(n: int, size: int, repeats: int, adapter: Callable[[Path, Ledger], Transfer]) -> float:
    times = []
    for _ in range(repeats):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(prune_once(Path(tmp), n, size, adapter))
    return statistics.median(times)


def main() -> None:
    from cosmic_dagster.emulators.globus.server import EmulatorServer

    parser = argparse.ArgumentParser()
    parser.add_argument("--scans", type=int, default=200)
    parser.add_argument("--size", type=int, default=1 << 20)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rates = {}
    print(f"{args.scans} scans of {args.size} bytes, verified and deleted; median of {args.repeats}")
    print(f"{'profile':>8} {'prune run s':>12} {'scans/min':>10} {'MB/s verified':>14}")
    local_s = measure(args.scans, args.size, args.repeats, local_adapter)
    with EmulatorServer({BEAMLINE_ID: "/", NERSC_ID: "/"}, dict([CLIENT]), retry_interval_s=0.1) as emu:
        globus_s = measure(args.scans, args.size, args.repeats, globus_adapter_factory(emu.url))
    for name, seconds in (("local", local_s), ("globus", globus_s)):
        rates[name] = args.scans / seconds * 60
        mbps = args.scans * args.size / seconds / 1e6
        print(f"{name:>8} {seconds:>12.2f} {rates[name]:>10.0f} {mbps:>14.1f}")
    print(f"ratio local/globus: {rates['local'] / rates['globus']:.1f}")
    print(f"RESULT local_scans_per_min={rates['local']:.0f} globus_scans_per_min={rates['globus']:.0f}")


if __name__ == "__main__":
    main()
