"""Globus errors handled by what they mean (issue 12, items 6-8), each injected at the wire.

409 on submit by its code (the pending-task limit is waited out, bounded and at WARNING; any other
conflict fails at once), a non-JSON 502 described by status, reason and body, an INACTIVE task
canceled with its reason and what to do, and 429 beyond the SDK's retries given the outage grace.
"""

from __future__ import annotations

import logging
from pathlib import Path

import globus_sdk
import pytest

from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.emulators.globus.tasks import PENDING_LIMIT_CODE
from cosmic_dagster.transfer.protocol import TransferError

from .conftest import BEAMLINE_ID, NERSC_ID, AdapterFactory, make_scan, scan_relpath, transfer_tasks

ADAPTER_LOG = "cosmic_dagster.transfer.globus.transfer"
PENDING_LIMIT = {
    "call": "submit_transfer",
    "status": 409,
    "code": PENDING_LIMIT_CODE,
    "message": "At most 100 pending transfer tasks per user",
}
BAD_GATEWAY = "<html><head><title>502 Bad Gateway</title></head><body><h1>502 Bad Gateway</h1></body></html>"


def submits(emulator: EmulatorServer) -> list[int]:
    return [c["status"] for c in emulator.calls() if c["call"] == "submit_transfer"]


def test_pending_task_limit_is_waited_out_at_warning_with_a_count_and_a_bound(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer, caplog: pytest.LogCaptureFixture
) -> None:
    items = [make_scan(beamline, scan_relpath(i)) for i in range(2)]
    emulator.inject({**PENDING_LIMIT, "times": 3})
    with caplog.at_level(logging.INFO, logger=ADAPTER_LOG):
        report = make_adapter(pending_limit_wait_s=30).copy_batch(items, "pending limit")
    assert all(o.ok for o in report.outcomes.values())
    assert submits(emulator) == [409, 409, 409, 202] and len(transfer_tasks(emulator)) == 1
    waits = [r for r in caplog.records if "pending-task limit" in r.getMessage()]
    assert [r.levelno for r in waits] == [logging.WARNING] * 3
    assert "refused 3 time(s)" in waits[-1].getMessage()
    assert "giving up after 30 s" in waits[-1].getMessage()


def test_pending_task_limit_wait_is_bounded_and_backs_off(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    emulator.inject({**PENDING_LIMIT, "times": None})
    adapter = make_adapter(pending_limit_wait_s=1.0)  # polls every 0.05 s: backoff 0.05, 0.1, 0.2, ...
    with pytest.raises(
        TransferError, match=r"pending-task limit still reached after \d+ submit\(s\)"
    ) as info:
        adapter.copy_batch([make_scan(beamline, scan_relpath(0))], "never room")
    assert "At most 100 pending transfer tasks per user" in str(info.value)
    assert 3 <= len(submits(emulator)) <= 7  # without backoff: one POST per poll, ~20 in 1 s
    assert transfer_tasks(emulator) == []


def test_real_pending_limit_of_the_emulator_is_recognised(beamline: Path, nersc: Path) -> None:
    """The emulator's own cap (not an injected fault) answers the code the adapter waits on."""
    with EmulatorServer(
        {BEAMLINE_ID: beamline, NERSC_ID: "/"}, {"c": "s"}, max_pending_tasks=1, task_latency_s=30
    ) as emu:
        client = globus_sdk.TransferClient(
            authorizer=globus_sdk.ClientCredentialsAuthorizer(
                globus_sdk.ConfidentialAppAuthClient("c", "s", base_url=emu.url),
                "urn:globus:auth:scope:transfer.api.globus.org:all",
            ),
            base_url=emu.url,
        )
        make_scan(beamline, "a.cxi")

        def submit() -> None:
            data = globus_sdk.TransferData(BEAMLINE_ID, NERSC_ID)
            data.add_item("/a.cxi", str(nersc / "a.cxi"))
            client.submit_transfer(data)

        submit()
        with pytest.raises(globus_sdk.TransferAPIError) as info:
            submit()
    assert (info.value.http_status, info.value.code) == (409, PENDING_LIMIT_CODE)


def test_unknown_409_fails_the_batch_at_once_with_the_servers_message(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    message = "A task with submission id 1234 already exists"
    emulator.inject(
        {"call": "submit_transfer", "status": 409, "code": "Conflict", "message": message, "times": None}
    )
    with pytest.raises(TransferError) as info:
        make_adapter().copy_batch([make_scan(beamline, scan_relpath(0))], "conflict")
    assert f"HTTP 409 Conflict: {message}" in str(info.value)
    assert submits(emulator) == [409]  # not re-POSTed every poll until the deadline


def test_non_json_502_is_described_by_status_reason_and_body(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    emulator.inject({"call": "get_task", "status": 502, "body": BAD_GATEWAY, "times": None})
    with pytest.raises(TransferError) as info:
        make_adapter(unreachable_grace_s=0.2).copy_batch([make_scan(beamline, scan_relpath(0))], "proxy")
    text = str(info.value)
    assert "HTTP 502 Bad Gateway: <html><head><title>502 Bad Gateway</title>" in text, text
    assert "None" not in text


def test_inactive_task_is_canceled_with_its_reason_and_what_to_do(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    items = [make_scan(beamline, scan_relpath(i)) for i in range(2)]
    emulator.inject({"path": "*", "error": "CREDENTIAL_EXPIRED"})
    adapter = make_adapter()
    report = adapter.copy_batch(items, "expired credentials")
    (task,) = transfer_tasks(emulator)
    assert task["status"] == "FAILED" and task["fatal_error"]["code"] == "CANCELED"
    for item in items:
        error = report.outcomes[item.key].error
        assert error is not None and "INACTIVE, CREDENTIAL_EXPIRED" in error and "renew them" in error, error
    summary = adapter.task_summaries[task["task_id"]]
    assert summary.nice_status == "CREDENTIAL_EXPIRED"
    assert summary.error is not None and "CREDENTIAL_EXPIRED" in summary.error


def test_emulator_suspends_a_task_on_expired_credentials(
    emulator: EmulatorServer, client: globus_sdk.TransferClient, beamline: Path, nersc: Path
) -> None:
    make_scan(beamline, "a.cxi")
    emulator.inject({"path": "/a.cxi", "error": "CREDENTIAL_EXPIRED"})
    data = globus_sdk.TransferData(BEAMLINE_ID, NERSC_ID)
    data.add_item("/a.cxi", str(nersc / "a.cxi"))
    task_id = client.submit_transfer(data)["task_id"]
    assert client.task_wait(task_id, timeout=10, polling_interval=1)  # True for INACTIVE too
    doc = client.get_task(task_id)
    assert (doc["status"], doc["nice_status"], doc["is_ok"]) == ("INACTIVE", "CREDENTIAL_EXPIRED", False)
    assert client.cancel_task(task_id)["code"] == "Canceled"
    assert client.get_task(task_id)["status"] == "FAILED"
    assert not (nersc / "a.cxi").exists()


@pytest.mark.parametrize("call", ["get_task", "submit_transfer", "task_successful_transfers"])
def test_429_beyond_the_sdk_retries_gets_the_grace_and_its_retry_after(
    call: str,
    beamline: Path,
    make_adapter: AdapterFactory,
    emulator: EmulatorServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # FAST_RETRIES makes 4 tries per call: 5 refusals outlast the SDK once.
    emulator.inject({"call": call, "status": 429, "retry_after": 1, "times": 5})
    items = [make_scan(beamline, scan_relpath(i)) for i in range(2)]
    with caplog.at_level(logging.WARNING, logger=ADAPTER_LOG):
        report = make_adapter().copy_batch(items, "rate limited")
    assert all(o.ok for o in report.outcomes.values())
    assert len(transfer_tasks(emulator)) == 1 and emulator.faults.describe() == []
    (warning,) = [r.getMessage() for r in caplog.records if "HTTP 429" in r.getMessage()]
    assert "retrying in 1.0 s" in warning  # Retry-After, not the 0.05 s poll interval


def test_429_for_longer_than_the_grace_fails_the_batch(
    beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer
) -> None:
    emulator.inject({"call": "get_task", "status": 429, "retry_after": 0, "times": None})
    with pytest.raises(TransferError, match="HTTP 429 RequestLimitExceeded"):
        make_adapter(unreachable_grace_s=0.3).copy_batch([make_scan(beamline, scan_relpath(0))], "429")
