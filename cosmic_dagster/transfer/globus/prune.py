"""Pruning over Globus: re-verify copies with a checksum-sync task, delete with a delete task.

A name match at NERSC proves nothing (the older system's mistake). Here a copy counts as verified
only when a transfer task with ``sync_level=checksum`` and ``verify_checksum`` from the beamline to
NERSC SUCCEEDED *without moving the file*: Globus checksummed both sides and found them equal.
A missing or altered copy is copied again by that task (repaired), and the scan is kept this time.

A delete is a Globus delete task on the beamline collection (the agent may have no raw data); its
final status is read (never ``task_wait``'s bool) and each file is then listed: a file counts as
deleted only when it is gone, whatever the task said.
"""

from __future__ import annotations

import posixpath
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import globus_sdk

from cosmic_dagster.domain.scans import ScanPathError, normalize_relpath
from cosmic_dagster.transfer.globus.listing import GlobusLister
from cosmic_dagster.transfer.protocol import Check, SourceFile, TransferItem

if TYPE_CHECKING:
    from cosmic_dagster.transfer.globus.transfer import GlobusTransfer

#: How long a verification or delete task may take before Globus fails it.
TASK_DEADLINE_S = 6 * 3600


def inspect_sources(adapter: GlobusTransfer, items: Sequence[TransferItem]) -> dict[str, SourceFile]:
    """One ``ls`` per day folder of the beamline collection (links are reported, not followed)."""
    lister = GlobusLister(adapter.client, adapter.source)
    out: dict[str, SourceFile] = {}
    listings: dict[str, dict[str, Any]] = {}
    for item in items:
        try:
            relpath = normalize_relpath(item.relpath)
        except ScanPathError as exc:
            out[item.key] = SourceFile(item.key, exists=True, problem=str(exc))
            continue
        folder, name = posixpath.split(relpath)
        if folder not in listings:
            listings[folder] = {e.name: e for e in lister.list_dir(folder) or []}
        entry = listings[folder].get(name)
        if entry is None:
            out[item.key] = SourceFile(item.key, exists=False)
        elif entry.is_symlink or entry.is_dir:
            kind = "a symlink" if entry.is_symlink else "a folder"
            out[item.key] = SourceFile(item.key, exists=True, problem=f"{kind} on the beamline collection")
        else:
            out[item.key] = SourceFile(item.key, exists=True, size=entry.size, mtime=entry.mtime)
    return out


def verify_copies(adapter: GlobusTransfer, items: Sequence[TransferItem]) -> dict[str, Check]:
    """One checksum-sync transfer task for all items; verified = in sync, 0 bytes moved."""
    from cosmic_dagster.transfer.globus.transfer import _failure_text, _Tracked

    if not items:
        return {}
    data = globus_sdk.TransferData(
        adapter.source.uuid,
        adapter.destination.uuid,
        label=f"cosmic prune verification of {len(items)} scan(s)",
        sync_level="checksum",
        verify_checksum=True,
        deadline=_deadline(),
        skip_source_errors=True,
        fail_on_quota_errors=True,
    )
    for item in items:
        data.add_item(
            adapter.source.path(item.relpath),
            adapter.destination.path(item.relpath),
            external_checksum=item.sha256 or globus_sdk.MISSING,
            checksum_algorithm="SHA256" if item.sha256 else globus_sdk.MISSING,
        )
    task_id = adapter.client.submit_transfer(data)["task_id"]
    tracked = _Tracked(task_id, "", list(items))
    doc = adapter._wait([tracked])[task_id]
    moved = adapter._successful_sources(task_id)
    skipped = {
        e["source_path"]: e.get("error_code") or "ERROR"
        for e in adapter.client.paginated.task_skipped_errors(task_id).items()
    }
    failure = _failure_text(doc, tracked) if doc["status"] == "FAILED" else None
    out: dict[str, Check] = {}
    for item in items:
        source = adapter.source.path(item.relpath)
        if source in moved:
            out[item.key] = Check(
                False,
                f"copy at NERSC was missing or differed: Globus task {task_id} copied it again "
                "(repaired; kept this time)",
            )
        elif source in skipped:
            out[item.key] = Check(False, f"{skipped[source]} at the beamline collection (task {task_id})")
        elif failure is not None:
            out[item.key] = Check(False, f"verification task {task_id}: {failure}")
        else:
            out[item.key] = Check(
                True, f"Globus checksum sync task {task_id} found the copy identical (0 bytes moved)"
            )
    return out


def delete_sources(adapter: GlobusTransfer, items: Sequence[TransferItem]) -> dict[str, Check]:
    """One delete task on the beamline collection; each file then listed to confirm it is gone."""
    from cosmic_dagster.transfer.globus.transfer import _failure_text, _Tracked

    if not items:
        return {}
    data = globus_sdk.DeleteData(
        adapter.source.uuid,
        label=f"cosmic prune of {len(items)} scan(s)",
        recursive=False,
        deadline=_deadline(),
    )
    for item in items:
        data.add_item(adapter.source.path(item.relpath))
    task_id = adapter.client.submit_delete(data)["task_id"]
    tracked = _Tracked(task_id, "", list(items))
    doc = adapter._wait([tracked])[task_id]
    failure = _failure_text(doc, tracked) if doc["status"] == "FAILED" else None
    after = inspect_sources(adapter, items)
    out: dict[str, Check] = {}
    for item in items:
        if not after[item.key].exists:
            out[item.key] = Check(True, f"deleted by Globus delete task {task_id} ({doc['status']})")
        else:
            why = failure or f"task ended {doc['status']} but the file is still listed"
            out[item.key] = Check(False, f"Globus delete task {task_id} failed: {why}")
    return out


def _deadline() -> str:
    deadline = datetime.now(timezone.utc) + timedelta(seconds=TASK_DEADLINE_S)
    return deadline.strftime("%Y-%m-%dT%H:%M:%SZ")
