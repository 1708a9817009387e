"""GlobusTransfer (real globus-sdk) against the emulator: copies, batching, per-item failures, faults."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.transfer.globus.transfer import LEDGER_KIND, GlobusCredentials
from cosmic_dagster.transfer.protocol import TransferError, TransferItem

from .conftest import CLIENT_ID, CLIENT_SECRET, AdapterFactory, make_scan, scan_relpath, transfer_tasks


def scans(beamline: Path, n: int, size: int = 4096) -> list[TransferItem]:
    return [make_scan(beamline, scan_relpath(i), size) for i in range(n)]


def successful_sources(emulator: EmulatorServer, client) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for task in transfer_tasks(emulator):
        out += [e["source_path"] for e in client.paginated.task_successful_transfers(task["task_id"]).items()]
    return out


def test_batch_is_one_task_copied_and_verified(
    beamline: Path, nersc: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 5)
    adapter = make_adapter()
    report = adapter.copy_batch(items, "scans 0-4")

    tasks = transfer_tasks(emulator)
    assert len(tasks) == 1 and tasks[0]["status"] == "SUCCEEDED"
    assert tasks[0]["sync_level"] == 3 and tasks[0]["verify_checksum"] is True
    assert report.task_id == tasks[0]["task_id"]
    assert report.task_url == f"https://app.globus.org/activity/{report.task_id}"
    for item in items:
        outcome = report.outcomes[item.key]
        assert outcome.ok and not outcome.already_present, outcome
        assert outcome.destination == str(nersc / item.relpath) == adapter.destination_path(item.relpath)
        assert hashlib.sha256(Path(outcome.destination).read_bytes()).hexdigest() == item.sha256
        assert (outcome.checksum, outcome.checksum_algorithm, outcome.bytes) == (
            item.sha256,
            "sha256",
            item.size,
        )
    assert not list(nersc.rglob("*.globus-part"))
    summary = adapter.task_summaries[report.task_id]
    assert summary.bytes_transferred == 5 * 4096 and summary.files_transferred == 5


def test_verified_copy_is_not_copied_again(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 2)
    make_adapter().copy_batch(items, "first")
    report = make_adapter().copy_batch(items, "again")
    assert len(transfer_tasks(emulator)) == 1
    assert all(o.ok and o.already_present for o in report.outcomes.values())


def test_verified_copy_that_vanished_is_copied_again(
    beamline: Path, nersc: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 2)
    make_adapter().copy_batch(items, "first")
    (nersc / items[0].relpath).unlink()
    report = make_adapter().copy_batch(items, "again")
    assert report.outcomes[items[0].key].ok and not report.outcomes[items[0].key].already_present
    assert report.outcomes[items[1].key].already_present
    assert len(transfer_tasks(emulator)) == 2


def test_file_already_at_destination_is_skipped_by_checksum_sync(
    beamline: Path, nersc: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 2)
    target = nersc / items[0].relpath
    target.parent.mkdir(parents=True)
    target.write_bytes((beamline / items[0].relpath).read_bytes())
    report = make_adapter().copy_batch(items, "sync")
    assert report.outcomes[items[0].key].already_present and report.outcomes[items[0].key].ok
    assert not report.outcomes[items[1].key].already_present and report.outcomes[items[1].key].ok
    assert transfer_tasks(emulator)[0]["files_skipped"] == 1


@pytest.mark.parametrize("problem", ["missing", "permission"])
def test_bad_source_file_fails_alone(
    problem: str, beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 3)
    bad = items[1]
    if problem == "missing":
        (beamline / bad.relpath).unlink()
    else:
        emulator.inject({"path": f"*/{Path(bad.relpath).name}", "error": "PERMISSION_DENIED", "times": None})
    report = make_adapter().copy_batch(items, "one bad")
    code = "FILE_NOT_FOUND" if problem == "missing" else "PERMISSION_DENIED"
    assert report.outcomes[bad.key].error is not None and code in report.outcomes[bad.key].error
    assert not report.outcomes[bad.key].verified
    assert all(report.outcomes[i.key].ok for i in items if i is not bad)
    assert len(transfer_tasks(emulator)) == 1


def test_stuck_destination_error_is_canceled_and_good_files_resubmitted(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer, client
) -> None:  # type: ignore[no-untyped-def]
    items = scans(beamline, 3)
    bad = items[2]
    emulator.inject(
        {
            "path": f"*/{Path(bad.relpath).name}",
            "error": "PERMISSION_DENIED",
            "side": "destination",
            "times": None,
        }
    )
    report = make_adapter().copy_batch(items, "dest denied")
    error = report.outcomes[bad.key].error
    assert error is not None and "PERMISSION_DENIED" in error and "canceled" in error
    assert all(report.outcomes[i.key].ok for i in items if i is not bad)
    tasks = transfer_tasks(emulator)
    assert tasks[0]["status"] == "FAILED" and tasks[0]["fatal_error"]["code"] == "CANCELED"
    assert all(t["status"] != "ACTIVE" for t in tasks)
    copied = successful_sources(emulator, client)
    assert len(copied) == len(set(copied)) == 2  # no file copied twice


def test_fatal_task_failure_blames_its_file_and_keeps_the_others(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 3)
    corrupt = TransferItem(items[0].key, items[0].relpath, items[0].size, "0" * 64)  # source changed since
    report = make_adapter().copy_batch([corrupt, *items[1:]], "checksum mismatch")
    error = report.outcomes[corrupt.key].error
    assert error is not None and "EXTERNAL_CHECKSUM_MISMATCH" in error
    assert all(report.outcomes[i.key].ok for i in items[1:])
    assert transfer_tasks(emulator)[0]["status"] == "FAILED"


def test_fatal_fault_fails_its_file_and_the_rest_is_resubmitted(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 2)
    emulator.inject({"path": "*", "error": "ENDPOINT_ERROR", "fatal": True, "times": 1})
    report = make_adapter().copy_batch(items, "fatal")
    error = report.outcomes[items[0].key].error
    assert error is not None and "failed with ENDPOINT_ERROR" in error and items[0].relpath in error
    assert report.outcomes[items[1].key].ok
    assert [t["status"] for t in transfer_tasks(emulator)] == ["FAILED", "SUCCEEDED"]


def test_deadline_exceeded_fails_clearly(
    beamline: Path, make_adapter: AdapterFactory, ledger: Ledger
) -> None:
    items = [make_scan(beamline, scan_relpath(0), 400_000)]
    with EmulatorServer(
        {"44ae904c-ab64-4145-a8f0-7287de38324d": beamline, "df82346e-9a15-11ea-b3c4-0ae144191ee3": "/"},
        {CLIENT_ID: CLIENT_SECRET},
        bandwidth_mbps=0.8,  # 100 kB/s: 4 s for the file, deadline 1 s
    ) as slow:
        report = make_adapter(url=slow.url, deadline_s=1).copy_batch(items, "too slow")
        tasks = [t for t in slow.tasks() if t["type"] == "TRANSFER"]
    error = report.outcomes[items[0].key].error
    assert error is not None and "deadline exceeded" in error
    assert len(tasks) == 1 and tasks[0]["fatal_error"]["code"] == "EXPIRED"
    (batch,) = ledger.all(LEDGER_KIND).values()
    assert batch["failed"] == [items[0].key] and batch["verified"] == []  # a rerun starts afresh


@pytest.mark.parametrize(
    "fault",
    [
        {"call": "submit_transfer", "status": 503, "times": 2},
        {"call": "submit_transfer", "status": 500, "times": 2, "after": True},  # created, answer lost
        {"call": "submit_transfer", "status": 429, "times": 2, "retry_after": 0},
        {"call": "get_task", "status": 502, "times": 3},
        {"call": "token", "status": 500, "times": 1},
    ],
    ids=["503-submit", "500-after-submit", "429-submit", "502-poll", "500-token"],
)
def test_transient_errors_are_retried_without_duplicate_tasks(
    fault: dict, beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 2)
    emulator.inject(fault)
    report = make_adapter().copy_batch(items, "transient")
    assert all(o.ok for o in report.outcomes.values())
    assert len(transfer_tasks(emulator)) == 1
    assert emulator.faults.describe() == []  # the fault really fired


def test_lost_submit_answer_is_replayed_to_the_same_task(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer, ledger: Ledger
) -> None:
    items = scans(beamline, 2)
    emulator.inject({"call": "submit_transfer", "status": 500, "times": None, "after": True})
    with pytest.raises(TransferError, match="HTTP 500"):  # after a short outage grace
        make_adapter(unreachable_grace_s=1.0).copy_batch(items, "answer lost")
    assert len(transfer_tasks(emulator)) == 1  # the task exists, the client never learnt its id
    (batch,) = [r for n, r in ledger.all(LEDGER_KIND).items() if n.startswith("batch:")]
    assert batch["task_id"] is None
    emulator.clear_faults()
    report = make_adapter().copy_batch(items, "answer lost")
    assert all(o.ok for o in report.outcomes.values())
    tasks = transfer_tasks(emulator)
    assert len(tasks) == 1 and report.task_id == tasks[0]["task_id"]


def test_token_failure_is_a_clear_batch_error_without_secrets(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 1)
    wrong = GlobusCredentials(CLIENT_ID, "wrong-secret-value")
    with pytest.raises(TransferError) as info:
        make_adapter(creds=wrong).copy_batch(items, "bad secret")
    message = str(info.value)
    assert "Globus Auth refused the client credentials" in message and "invalid_client" in message
    assert "wrong-secret-value" not in message and info.value.__cause__ is None
    assert transfer_tasks(emulator) == []


def test_bad_relpath_fails_alone(beamline: Path, make_adapter: AdapterFactory) -> None:
    good = scans(beamline, 1)[0]
    bad = TransferItem("p.bad", "../etc/passwd", 10, "0" * 64)
    report = make_adapter().copy_batch([good, bad], "bad path")
    assert report.outcomes[good.key].ok
    assert "relative and normalized" in (report.outcomes[bad.key].error or "")


def test_duplicate_keys_are_refused(beamline: Path, make_adapter: AdapterFactory) -> None:
    item = scans(beamline, 1)[0]
    with pytest.raises(TransferError, match="repeat a scan key"):
        make_adapter().copy_batch([item, item], "dup")


def test_secrets_never_reach_logs_or_reports(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    import base64

    for name in ("globus_sdk", "urllib3", "cosmic_dagster"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    caplog.set_level(logging.DEBUG)
    items = scans(beamline, 2)
    report = make_adapter().copy_batch(items, "full copy")
    with pytest.raises(TransferError) as info:
        make_adapter(creds=GlobusCredentials(CLIENT_ID, CLIENT_SECRET + "-x")).copy_batch(
            scans(beamline, 3)[2:], "token failure"
        )
    secrets = [CLIENT_SECRET, base64.b64encode(f"{CLIENT_ID}:{CLIENT_SECRET}".encode()).decode()]
    secrets += emulator.issued_tokens()
    assert len(secrets) >= 3 and "TransferClient" in caplog.text  # the SDK did log at DEBUG
    haystacks = [
        caplog.text,
        repr(report),
        str(info.value),
        repr(GlobusCredentials(CLIENT_ID, CLIENT_SECRET)),
    ]
    for secret in secrets:
        for text in haystacks:
            assert secret not in text


def test_failed_scan_is_copied_by_a_rerun_and_verified_ones_are_not(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = scans(beamline, 2)
    content = (beamline / items[1].relpath).read_bytes()
    (beamline / items[1].relpath).unlink()
    first = make_adapter().copy_batch(items, "first")
    assert first.outcomes[items[0].key].ok and not first.outcomes[items[1].key].ok
    (beamline / items[1].relpath).write_bytes(content)
    rerun = make_adapter().copy_batch(items, "rerun")
    assert rerun.outcomes[items[0].key].already_present
    assert rerun.outcomes[items[1].key].ok and not rerun.outcomes[items[1].key].already_present
    second = transfer_tasks(emulator)[1]
    assert second["files"] == 1 and rerun.task_id == second["task_id"]
