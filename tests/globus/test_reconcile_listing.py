"""Reconciliation in the agent profile: the date range listed on the beamline Globus collection."""

import datetime as dt
import time
from pathlib import Path

from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.pipeline.reconcile import DONE, MISSING, Known, reconcile
from cosmic_dagster.transfer.globus.listing import GlobusLister
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials

from .conftest import FAST_RETRIES, make_scan, scan_relpath


def test_reconcile_over_the_globus_collection_finds_old_folders_beyond_the_recent_window(
    beamline: Path, endpoints_file: Path, credentials: GlobusCredentials, emulator: EmulatorServer
):
    done = make_scan(beamline, scan_relpath(1, day="240315"))
    old = make_scan(beamline, scan_relpath(7, day="240201"))  # weeks before the newest folders
    make_scan(beamline, scan_relpath(1, day="230101"))  # outside the range: never listed
    for day in ("240314", "240315"):
        make_scan(beamline, scan_relpath(2, day=day))
    lister = GlobusLister.from_config(
        endpoints_file,
        "data7012",
        credentials,
        transfer_base_url=emulator.url,
        auth_base_url=emulator.url,
        retry_config=FAST_RETRIES,
    )
    known = Known([done.key], [done.key], [done.key], (), planned=lambda key: False)
    report = reconcile(
        lister,
        known,
        start=dt.date(2024, 1, 1),
        end=dt.date(2024, 3, 31),
        now=time.time() + 60,
        settle_seconds=2,
    )
    assert report.states[done.key] == DONE and report.states[old.key] == MISSING
    assert report.listed == 4 and report.folders == 3
    assert report.to_launch()[0] == old.key  # oldest file first
    listed = [c["query"] for c in emulator.calls() if c["call"] == "operation_ls"]
    assert any("240201" in q for q in listed) and not any("2023" in q for q in listed), listed
