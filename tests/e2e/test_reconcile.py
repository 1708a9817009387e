"""Reconciliation through the real daemon: a daemon down across day boundaries, a scan written into
an old folder and a partition whose run never happened are all found and processed exactly once."""

import datetime as dt

import dagster as dg
import pytest

from cosmic_dagster import names
from cosmic_dagster.cli.main import main
from cosmic_dagster.domain.scans import scan_key
from tests.conftest import DAY, Beamline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_reconcile_finds_every_missed_scan_and_launches_each_once(live, capsys):
    root = live.beamline.root
    first = scan_key(live.beamline.scan())
    live.wait_checked([first])

    live.services.stop_daemon()  # a long weekend without the daemon: three new day folders
    later = [scan_key(Beamline(root, DAY + dt.timedelta(days=d)).scan()) for d in (1, 2, 3)]
    old = scan_key(Beamline(root, DAY - dt.timedelta(days=10)).scan())  # written into an old folder
    never_run = scan_key(Beamline(root, DAY - dt.timedelta(days=11)).scan())
    live.instance.add_dynamic_partitions(names.PARTITIONS, [never_run])  # registered, never launched
    live.services.start_daemon()

    args = ["reconcile", "--url", live.services.url, "--start", str(DAY - dt.timedelta(days=30))]
    assert main([*args, "--end", str(DAY + dt.timedelta(days=3))]) == 0
    report = capsys.readouterr().out
    assert "reconcile_job: SUCCESS" in report and "listed         6" in report, report

    everything = [first, *later, old, never_run]
    live.wait_checked(everything)
    for key in everything:  # no duplicates: one registration per scan, whoever launched it
        records = live.instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(names.RAW_SCAN), asset_partitions=[key]), limit=10
        ).records
        assert len(records) == 1, (key, len(records))
    runs = live.instance.get_runs(filters=dg.RunsFilter(tags={names.TAG_SUBMITTED_BY: names.BY_RECONCILE}))
    by_reconcile = set()
    for run in runs:
        keys = live.instance.get_dynamic_partitions(names.PARTITIONS)
        start, end = run.tags[names.TAG_RANGE_START], run.tags[names.TAG_RANGE_END]
        by_reconcile |= set(keys[keys.index(start) : keys.index(end) + 1])
    # The day the sensor's window no longer covers, the old folder and the never-run partition
    # (the two newest day folders may go either way: the restarted sensor sees them too).
    assert {later[0], old, never_run} <= by_reconcile
    assert first not in by_reconcile

    assert main([*args, "--end", str(DAY + dt.timedelta(days=3))]) == 0  # again: nothing left to do
    again = capsys.readouterr().out
    assert "queued         0" in again and "done           6" in again, again
