"""The adapter against globus_sdk.testing canned responses (production URLs, mocked at the wire)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import globus_sdk
import pytest
import responses
from globus_sdk.testing import get_last_request, load_response

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, GlobusTransfer
from cosmic_dagster.transfer.protocol import TransferError

from .conftest import FAST_RETRIES, make_scan, scan_relpath

TRANSFER = "https://transfer.api.globus.org/v0.10"


@pytest.fixture
def mocked() -> Iterator[None]:
    responses.start()
    try:
        load_response(globus_sdk.ConfidentialAppAuthClient.oauth2_client_credentials_tokens)
        load_response(globus_sdk.TransferClient.get_submission_id)
        yield
    finally:
        responses.stop()
        responses.reset()


@pytest.fixture
def adapter(endpoints_file: Path, credentials: GlobusCredentials, ledger: Ledger) -> GlobusTransfer:
    return GlobusTransfer.from_config(
        endpoints_file,
        "data7012",
        "nersc7012",
        credentials,
        ledger,
        poll_interval_s=0.01,
        retry_config=FAST_RETRIES,
    )


def add_finished_task(task_id: str, source_path: str, destination_path: str) -> None:
    """Hand-written: the SDK ships no fixtures for get_task and the success/skip lists."""
    doc = {
        "DATA_TYPE": "task",
        "task_id": task_id,
        "type": "TRANSFER",
        "status": "SUCCEEDED",
        "nice_status": None,
        "request_time": "2024-03-15T10:00:00+00:00",
        "completion_time": "2024-03-15T10:00:04+00:00",
        "files": 1,
        "files_transferred": 1,
        "files_skipped": 0,
        "bytes_transferred": 4096,
        "effective_bytes_per_second": 1024,
        "fatal_error": None,
        "faults": 0,
    }
    responses.add(responses.GET, f"{TRANSFER}/task/{task_id}", json=doc)
    responses.add(
        responses.GET,
        f"{TRANSFER}/task/{task_id}/successful_transfers",
        json={
            "DATA_TYPE": "successful_transfers",
            "marker": 0,
            "next_marker": None,
            "DATA": [
                {
                    "DATA_TYPE": "successful_transfer",
                    "source_path": source_path,
                    "destination_path": destination_path,
                }
            ],
        },
    )
    responses.add(
        responses.GET,
        f"{TRANSFER}/task/{task_id}/skipped_errors",
        json={"DATA_TYPE": "skipped_errors", "marker": 0, "next_marker": None, "DATA": []},
    )


def test_copy_against_canned_responses(
    mocked: None, adapter: GlobusTransfer, beamline: Path, nersc: Path
) -> None:
    submitted = load_response(globus_sdk.TransferClient.submit_transfer)
    task_id, submission_id = submitted.metadata["task_id"], submitted.metadata["submission_id"]
    item = make_scan(beamline, scan_relpath(1))
    add_finished_task(task_id, f"/{item.relpath}", f"{nersc}/{item.relpath}")
    submit_seen: list[dict] = []

    report = adapter.copy_batch([item], "canned")

    for call in responses.calls:
        if call.request.url == f"{TRANSFER}/transfer":
            submit_seen.append(json.loads(call.request.body))
    (body,) = submit_seen
    assert body["submission_id"] == submission_id
    assert body["sync_level"] == 3 and body["verify_checksum"] is True and body["skip_source_errors"] is True
    assert body["DATA"] == [
        {
            "DATA_TYPE": "transfer_item",
            "source_path": f"/{item.relpath}",
            "destination_path": f"{nersc}/{item.relpath}",
            "external_checksum": item.sha256,
            "checksum_algorithm": "SHA256",
        }
    ]
    assert report.task_id == task_id and report.outcomes[item.key].ok
    assert report.outcomes[item.key].seconds == 4.0
    last = get_last_request()
    assert (
        last is not None
        and last.headers["Authorization"] == "Bearer DUMMY_TRANSFER_TOKEN_FROM_THE_INTERTUBES"
    )


def test_submit_refused_is_a_clear_batch_error(mocked: None, adapter: GlobusTransfer, beamline: Path) -> None:
    load_response(globus_sdk.TransferClient.submit_transfer, case="failure")
    with pytest.raises(TransferError, match=r"HTTP 400 ClientError\.BadRequest\.NoTransferItems"):
        adapter.copy_batch([make_scan(beamline, scan_relpath(2))], "refused")
