"""Reconciliation as plain Python (date-range walk, per-scan states, batches); the new settings."""

import datetime as dt
import os
import time
from pathlib import Path

import pytest

from cosmic_dagster.config import ConfigError, Settings
from cosmic_dagster.domain.arrivals import DirectoryLister
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.pipeline.reconcile import (
    DONE,
    IN_FLIGHT,
    INCOMPLETE,
    MISSING,
    NEVER_RUN,
    QUARANTINED,
    REJECTED,
    SETTLING,
    Known,
    contiguous_batches,
    day_folders,
    reconcile,
)
from cosmic_dagster.ptycho.simulate import cosmic_relpath


class CountingLister(DirectoryLister):
    def __init__(self, root: Path):
        super().__init__(root)
        self.listed: list[str] = []

    def list_dir(self, relpath: str):
        self.listed.append(relpath)
        return super().list_dir(relpath)


def touch(root: Path, relpath: str, age_s: float = 3600) -> str:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"scan")
    os.utime(path, (time.time() - age_s, time.time() - age_s))
    return relpath


def test_day_folders_lists_only_years_and_months_in_range(tmp_path: Path):
    for day in (dt.date(2024, 12, 31), dt.date(2025, 1, 2), dt.date(2025, 2, 27), dt.date(2025, 3, 1)):
        touch(tmp_path, cosmic_relpath(day, 1))
    (tmp_path / "2025" / "01" / "notaday").mkdir()
    lister = CountingLister(tmp_path)
    folders = day_folders(lister, dt.date(2025, 1, 1), dt.date(2025, 2, 28))
    assert folders == ["2025/01/250102", "2025/02/250227"]
    assert sorted(lister.listed) == ["", "2025", "2025/01", "2025/02"]  # 2024 and 2025/03 never listed


def test_every_scan_gets_a_state_and_only_missing_or_never_run_ones_are_launched(tmp_path: Path):
    day = dt.date(2025, 5, 6)
    rel = {
        name: touch(tmp_path, cosmic_relpath(day, n))
        for n, name in enumerate(
            ["done", "incomplete", "in_flight", "never_run", "quarantined", "missing"], 1
        )
    }
    rel["settling"] = touch(tmp_path, cosmic_relpath(day, 20), age_s=0)
    rel["rejected"] = touch(tmp_path, cosmic_relpath(day, 21))
    rel["old_missing"] = touch(tmp_path, cosmic_relpath(day - dt.timedelta(days=40), 1), age_s=40 * 86400)
    touch(tmp_path, cosmic_relpath(day - dt.timedelta(days=400), 1))  # outside the range
    key = {name: scan_key(r) for name, r in rel.items()}
    partitions = [key[n] for n in ("done", "incomplete", "in_flight", "never_run", "quarantined")]
    known = Known(
        partitions=partitions,
        registered=[key["done"], key["incomplete"]],
        reconstructed=[key["done"]],
        quarantined=[key["quarantined"]],
        planned=lambda k: k == key["in_flight"],
    )
    report = reconcile(
        DirectoryLister(tmp_path),
        known,
        start=day - dt.timedelta(days=60),
        end=day,
        now=time.time(),
        settle_seconds=60,
        accept=lambda r: "symlink leaves the root" if r == rel["rejected"] else None,
    )
    states = {name: report.states[key[name]] for name in rel}
    assert states == {
        "done": DONE,
        "incomplete": INCOMPLETE,
        "in_flight": IN_FLIGHT,
        "never_run": NEVER_RUN,
        "quarantined": QUARANTINED,
        "missing": MISSING,
        "settling": SETTLING,
        "rejected": REJECTED,
        "old_missing": MISSING,
    }
    assert report.to_launch() == [key["old_missing"], key["never_run"], key["missing"]]  # oldest first
    assert report.listed == 9 and report.folders == 2
    assert [r.relpath for r in report.rejections] == [rel["rejected"]]
    assert report.counts()[MISSING] == 2


def test_batches_never_span_a_partition_that_is_not_in_them():
    order = {k: i for i, k in enumerate("abcdefgh")}
    assert contiguous_batches(["h", "a", "b", "d", "e", "f", "x"], order, size=2) == [
        ["a", "b"],
        ["d", "e"],
        ["f"],
        ["h"],
    ]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COSMIC_RETENTION_DAYS": "-1"}, "COSMIC_RETENTION_DAYS='-1' must be >= 0"),
        ({"COSMIC_PRUNE_DELETE": "maybe"}, "COSMIC_PRUNE_DELETE='maybe': expected true or false"),
        ({"COSMIC_RECONCILE_CRON": "daily"}, "COSMIC_RECONCILE_CRON='daily': expected a cron string"),
        ({"COSMIC_RECONCILE_DAYS": "0"}, "COSMIC_RECONCILE_DAYS='0' must be >= 1"),
    ],
)
def test_prune_and_reconcile_settings_are_validated(env, message):
    with pytest.raises(ConfigError, match=message):
        Settings.from_env(env)


def test_prune_and_reconcile_defaults_never_delete():
    settings = Settings.from_env({})
    assert (settings.retention_days, settings.prune_delete, settings.reconcile_days) == (30.0, False, 30)
    assert Settings.from_env({"COSMIC_PRUNE_DELETE": "TRUE"}).prune_delete is True
