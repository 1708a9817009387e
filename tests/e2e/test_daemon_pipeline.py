"""Files appear -> sensor -> partitions -> runs -> assets and checks, through the real daemon."""

from __future__ import annotations

import signal

import dagster as dg
import pytest

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.quarantine import KIND as QUARANTINE
from cosmic_dagster.domain.scans import scan_key

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def sensor_run_keys(instance: dg.DagsterInstance) -> list[str]:
    """Every scan key of every run the sensor launched (a key twice = a duplicate)."""
    runs = instance.get_runs(dg.RunsFilter(tags={"dagster/sensor_name": "scan_arrival_sensor"}))
    keys: list[str] = []
    all_keys = instance.get_dynamic_partitions("scans")
    for run in runs:
        if "dagster/parent_run_id" in run.tags:
            continue  # a retry of a run (worker died), not a new launch
        start = run.tags["dagster/asset_partition_range_start"]
        end = run.tags["dagster/asset_partition_range_end"]
        keys += all_keys[all_keys.index(start) : all_keys.index(end) + 1]
    return keys


def test_stream_with_bad_inputs(live, tmp_path):
    bl = live.beamline
    good = [bl.scan() for _ in range(3)]
    day = good[0].rsplit("/", 1)[0]
    weird = [bl.scan(f"{day}/scan with spaces, commas | pipes ü走.cxi")]
    bad = {kind: bl.defect(kind) for kind in ("zero_bytes", "truncated", "not_cxi")}
    partial = live.settings.beamline_root / f"{day}/NS_261124900_ccdframes_0_0.cxi.tmp"
    partial.write_bytes(b"\x89HDF still being written")
    outside = tmp_path / "elsewhere.cxi"
    outside.write_bytes(b"not yours")
    link = live.settings.beamline_root / f"{day}/link_out.cxi"
    link.symlink_to(outside)

    ok_keys = [scan_key(r) for r in good + weird]
    bad_keys = {kind: scan_key(r) for kind, r in bad.items()}
    progress = live.wait_checked(ok_keys)
    assert all(p.passed for p in progress.values())

    ledger = Ledger(live.settings.state_dir / "ledger.sqlite")
    live.wait_for("bad scans quarantined", lambda: all(ledger.get(QUARANTINE, k) for k in bad_keys.values()))
    assert "empty" in ledger.get(QUARANTINE, bad_keys["zero_bytes"])["reason"].lower()
    assert "truncated" in ledger.get(QUARANTINE, bad_keys["truncated"])["reason"].lower()
    assert ledger.get(QUARANTINE, bad_keys["not_cxi"])["stage"] == "raw_scan"
    live.wait_for(
        "failed partitions",
        lambda: set(bad_keys.values()) <= set(live.api.partition_statuses("raw_scan")["failed"]),
    )
    partitions = live.instance.get_dynamic_partitions("scans")
    assert scan_key(f"{day}/link_out.cxi") not in partitions
    assert "outside the beamline root" in ledger.get(QUARANTINE, scan_key(f"{day}/link_out.cxi"))["reason"]
    assert not any("900" in k for k in partitions)  # the .tmp file was never registered
    for path in [*bad.values(), f"{day}/link_out.cxi"]:
        assert (live.settings.beamline_root / path).exists()  # nothing deleted or moved

    # The sensor keeps running after all that: a new scan still goes through.
    late = scan_key(bl.scan())
    live.wait_checked([late])
    keys = sensor_run_keys(live.instance)
    assert len(keys) == len(set(keys))


def test_daemon_restart_mid_stream_loses_nothing_and_duplicates_nothing(live):
    bl = live.beamline
    first = [scan_key(bl.scan()) for _ in range(2)]
    live.wait_for(
        "first scans registered", lambda: set(first) <= set(live.instance.get_dynamic_partitions("scans"))
    )
    live.services.stop_daemon(signal.SIGKILL, group=False)  # a crash, not a clean shutdown
    during = [scan_key(bl.scan()) for _ in range(2)]
    live.services.start_daemon()
    after = [scan_key(bl.scan())]
    progress = live.wait_checked(first + during + after, timeout_s=240)
    assert all(p.passed for p in progress.values())
    keys = sensor_run_keys(live.instance)
    assert len(keys) == len(set(keys)), f"a scan was launched twice: {sorted(keys)}"
    assert set(first + during + after) <= set(keys)
