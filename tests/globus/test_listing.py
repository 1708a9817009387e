"""GlobusLister: the beamline collection listed through operation_ls, for the arrival sensor."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cosmic_dagster.domain.arrivals import Cursor, discover
from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.transfer.globus.listing import GlobusLister
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials
from cosmic_dagster.transfer.protocol import TransferError

from .conftest import FAST_RETRIES, make_scan, scan_relpath


@pytest.fixture
def lister(endpoints_file: Path, credentials: GlobusCredentials, emulator: EmulatorServer) -> GlobusLister:
    return GlobusLister.from_config(
        endpoints_file,
        "data7012",
        credentials,
        transfer_base_url=emulator.url,
        auth_base_url=emulator.url,
        retry_config=FAST_RETRIES,
    )


def test_entries_match_the_files(lister: GlobusLister, beamline: Path) -> None:
    item = make_scan(beamline, scan_relpath(7), 1234)
    path = beamline / item.relpath
    os.utime(path, (1_700_000_000, 1_700_000_000))
    (path.parent / "link.cxi").symlink_to(path.name)
    entries = {e.name: e for e in lister.list_dir(str(Path(item.relpath).parent)) or []}
    scan = entries[path.name]
    assert (scan.size, scan.mtime, scan.is_dir, scan.is_symlink) == (1234, 1_700_000_000.0, False, False)
    assert entries["link.cxi"].is_symlink
    assert [(e.name, e.is_dir) for e in lister.list_dir("") or []] == [("2024", True)]


def test_missing_folder_or_file_is_none(lister: GlobusLister, beamline: Path) -> None:
    item = make_scan(beamline, scan_relpath(1))
    assert lister.list_dir("2031") is None
    assert lister.list_dir(item.relpath) is None


def test_pages_through_large_folders(lister: GlobusLister, beamline: Path, emulator: EmulatorServer) -> None:
    for i in range(5):
        make_scan(beamline, scan_relpath(i), 10)
    lister.page_size = 2
    names = [e.name for e in lister.list_dir("2024/03/240315") or []]
    assert names == sorted(Path(scan_relpath(i)).name for i in range(5))
    assert len([c for c in emulator.calls() if c["call"] == "operation_ls"]) == 3


def test_service_errors_are_clear(lister: GlobusLister, emulator: EmulatorServer) -> None:
    emulator.inject({"call": "operation_ls", "status": 403, "code": "EndpointPermissionDenied"})
    with pytest.raises(TransferError, match="EndpointPermissionDenied"):
        lister.list_dir("")


def test_discover_walks_only_recent_day_folders(
    lister: GlobusLister, beamline: Path, emulator: EmulatorServer
) -> None:
    for day in ("230101", "230102", "240314", "240315"):
        make_scan(beamline, scan_relpath(1, day))
    found = discover(lister, Cursor.load(None), now=4e9, recent_days=2, settle_seconds=0)
    assert sorted(a.relpath for a in found.arrivals) == [scan_relpath(1, "240314"), scan_relpath(1, "240315")]
    listed = {c["query"] for c in emulator.calls() if c["call"] == "operation_ls"}
    assert not any("2023" in q for q in listed)  # the old year is never opened
