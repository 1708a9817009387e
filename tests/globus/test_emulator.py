"""Contract tests: the real globus-sdk against the emulator, call by call, with Globus semantics."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from datetime import datetime, timedelta, timezone
from pathlib import Path

import globus_sdk
import pytest
from globus_sdk.transport import RetryConfig

from cosmic_dagster.emulators.globus.faults import FaultSpecError, parse_rule
from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, make_transfer_client

from .conftest import (
    BEAMLINE_ID,
    CLIENT_ID,
    CLIENT_SECRET,
    NERSC_ID,
    emulator_for,
    start_emulator_process,
    stop_process,
)

NO_RETRY = RetryConfig(max_retries=0)


def client_for(emu: EmulatorServer, secret: str = CLIENT_SECRET, retry: RetryConfig = NO_RETRY):
    creds = GlobusCredentials(CLIENT_ID, secret)
    return make_transfer_client(creds, transfer_base_url=emu.url, auth_base_url=emu.url, retry_config=retry)


def transfer_data(nersc: Path, *pairs: tuple[str, str], **kw: object) -> globus_sdk.TransferData:
    kw.setdefault("sync_level", "checksum")
    kw.setdefault("verify_checksum", True)
    data = globus_sdk.TransferData(BEAMLINE_ID, NERSC_ID, **kw)  # type: ignore[arg-type]
    for source, destination in pairs:
        recursive = source.endswith("/")
        data.add_item(source, f"{nersc}/{destination}", recursive=recursive or globus_sdk.MISSING)
    return data


def wait_final(tc: globus_sdk.TransferClient, task_id: str, timeout: float = 20) -> dict:
    end = time.monotonic() + timeout
    while (doc := tc.get_task(task_id))["status"] == "ACTIVE":
        assert time.monotonic() < end, doc
        time.sleep(0.02)
    return doc.data


def write(path: Path, data: bytes = b"x" * 1000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def in_seconds(seconds: float) -> str:
    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def test_token_needs_the_right_secret(emulator: EmulatorServer) -> None:
    with pytest.raises(globus_sdk.AuthAPIError) as info:
        client_for(emulator, secret="wrong").task_list()
    assert info.value.http_status == 401 and info.value.raw_json["error"] == "invalid_client"
    request = urllib.request.Request(emulator.url + "v0.10/task_list")
    with pytest.raises(urllib.error.HTTPError) as no_token:
        urllib.request.urlopen(request, timeout=5)
    assert no_token.value.code == 401


def test_transfer_lifecycle_and_paged_success_list(
    emulator: EmulatorServer, beamline: Path, nersc: Path
) -> None:
    for i in range(150):
        write(beamline / "run" / f"f{i:03d}.bin", bytes([i]) * 100)
    write(beamline / "single.bin")
    tc = client_for(emulator)
    result = tc.submit_transfer(
        transfer_data(nersc, ("/run/", "run/"), ("/single.bin", "single.bin"), label="L")
    )
    assert result["code"] == "Accepted"
    doc = wait_final(tc, result["task_id"])
    assert doc["status"] == "SUCCEEDED" and doc["nice_status"] is None and doc["completion_time"]
    assert (doc["files"], doc["directories"], doc["files_transferred"]) == (151, 1, 151)
    assert doc["bytes_transferred"] == 150 * 100 + 1000 and doc["label"] == "L" and doc["fatal_error"] is None
    successes = list(tc.paginated.task_successful_transfers(result["task_id"]).items())
    assert len(successes) == 151  # more than one page of 100
    assert (nersc / "run" / "f149.bin").read_bytes() == bytes([149]) * 100
    listed = tc.task_list(filter="label:L/status:SUCCEEDED")
    assert [t["task_id"] for t in listed] == [result["task_id"]]
    assert [e["code"] for e in tc.task_event_list(result["task_id"])] == ["SUCCEEDED"]


def test_submission_id_is_an_idempotency_key(emulator: EmulatorServer, beamline: Path, nersc: Path) -> None:
    write(beamline / "a.bin")
    tc = client_for(emulator)
    data = transfer_data(nersc, ("/a.bin", "a.bin"), submission_id=tc.get_submission_id()["value"])
    first, again = tc.submit_transfer(data), tc.submit_transfer(data)
    assert (first["code"], again["code"]) == ("Accepted", "Duplicate")
    assert first["task_id"] == again["task_id"] and len(emulator.tasks()) == 1
    data["submission_id"] = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(globus_sdk.TransferAPIError) as info:
        tc.submit_transfer(data)
    assert info.value.http_status == 400


def test_missing_source_keeps_task_active_with_faults_until_deadline(
    emulator: EmulatorServer, nersc: Path
) -> None:
    tc = client_for(emulator)
    # Deadlines have whole-second resolution: leave room for a loaded machine before it expires.
    task_id = tc.submit_transfer(transfer_data(nersc, ("/missing.bin", "m.bin"), deadline=in_seconds(6)))[
        "task_id"
    ]
    time.sleep(0.5)
    doc = tc.get_task(task_id)
    assert doc["status"] == "ACTIVE" and doc["nice_status"] == "FILE_NOT_FOUND"
    assert doc["faults"] > 0 and doc["is_ok"] is False
    assert tc.task_wait(task_id, timeout=1, polling_interval=1) is False  # still ACTIVE
    errors = [e for e in tc.task_event_list(task_id, limit=5) if e["is_error"]]
    assert errors and errors[0]["code"] == "FILE_NOT_FOUND" and "/missing.bin" in errors[0]["details"]
    doc = wait_final(tc, task_id)
    assert doc["status"] == "FAILED" and doc["fatal_error"]["code"] == "EXPIRED"


def test_skip_source_errors_lists_them(emulator: EmulatorServer, beamline: Path, nersc: Path) -> None:
    write(beamline / "ok.bin")
    tc = client_for(emulator)
    data = transfer_data(nersc, ("/ok.bin", "ok.bin"), ("/gone.bin", "gone.bin"), skip_source_errors=True)
    doc = wait_final(tc, tc.submit_transfer(data)["task_id"])
    assert doc["status"] == "SUCCEEDED" and doc["subtasks_skipped_errors"] == 1
    (skipped,) = tc.paginated.task_skipped_errors(doc["task_id"]).items()
    assert skipped["source_path"] == "/gone.bin" and skipped["error_code"] == "FILE_NOT_FOUND"


def test_cancel(beamline: Path, nersc: Path) -> None:
    write(beamline / "a.bin")
    with emulator_for(beamline, task_latency_s=30) as emu:
        tc = client_for(emu)
        task_id = tc.submit_transfer(transfer_data(nersc, ("/a.bin", "a.bin")))["task_id"]
        assert tc.cancel_task(task_id)["code"] == "Canceled"
        doc = tc.get_task(task_id)
        assert doc["status"] == "FAILED" and doc["fatal_error"]["code"] == "CANCELED"
        assert tc.task_wait(task_id, timeout=1, polling_interval=1) is True  # True although FAILED
        assert tc.cancel_task(task_id)["code"] == "TaskComplete"
        assert [e["code"] for e in tc.task_event_list(task_id)] == ["CANCELED"]
    assert not (nersc / "a.bin").exists()


def test_three_active_tasks_per_user_the_rest_queued(beamline: Path, nersc: Path) -> None:
    write(beamline / "a.bin")
    with emulator_for(beamline, task_latency_s=30) as emu:
        tc = client_for(emu)
        ids = [tc.submit_transfer(transfer_data(nersc, ("/a.bin", f"a{i}.bin")))["task_id"] for i in range(5)]

        def states() -> list[str]:
            time.sleep(0.3)  # let the scheduler act
            return [tc.get_task(t)["nice_status"] for t in ids]

        assert states() == ["OK", "OK", "OK", "Queued", "Queued"]
        tc.cancel_task(ids[0])
        assert states() == [None, "OK", "OK", "OK", "Queued"]


def test_pending_task_cap(beamline: Path, nersc: Path) -> None:
    write(beamline / "a.bin")
    with emulator_for(beamline, task_latency_s=30, max_pending_tasks=2) as emu:
        tc = client_for(emu)
        for i in range(2):
            tc.submit_transfer(transfer_data(nersc, ("/a.bin", f"a{i}.bin")))
        with pytest.raises(globus_sdk.TransferAPIError) as info:
            tc.submit_transfer(transfer_data(nersc, ("/a.bin", "a9.bin")))
        assert info.value.http_status == 409 and len(emu.tasks()) == 2


def test_rate_limit_answers_429(beamline: Path) -> None:
    with emulator_for(beamline, rate_limit_per_10s=5) as emu:
        tc = client_for(emu)
        for _ in range(5):
            tc.task_list()
        with pytest.raises(globus_sdk.TransferAPIError) as info:
            tc.task_list()
        assert info.value.http_status == 429


def test_sync_levels_skip_matching_files(emulator: EmulatorServer, beamline: Path, nersc: Path) -> None:
    write(beamline / "same.bin", b"abc" * 100)
    write(nersc / "same.bin", b"abc" * 100)
    write(beamline / "samesize.bin", b"abc" * 100)
    write(nersc / "samesize.bin", b"xyz" * 100)
    tc = client_for(emulator)
    pairs = (("/same.bin", "same.bin"), ("/samesize.bin", "samesize.bin"))
    checksum = wait_final(tc, tc.submit_transfer(transfer_data(nersc, *pairs))["task_id"])
    assert (checksum["files_skipped"], checksum["files_transferred"]) == (1, 1)
    assert (nersc / "samesize.bin").read_bytes() == b"abc" * 100
    write(nersc / "samesize.bin", b"xyz" * 100)
    size = wait_final(tc, tc.submit_transfer(transfer_data(nersc, *pairs, sync_level="size"))["task_id"])
    assert size["files_skipped"] == 2 and (nersc / "samesize.bin").read_bytes() == b"xyz" * 100
    [done] = tc.paginated.task_successful_transfers(checksum["task_id"]).items()
    assert done["source_path"] == "/samesize.bin"  # files skipped by sync are not listed


def test_verify_checksum_fault_resends_and_never_exposes_a_bad_file(
    emulator: EmulatorServer, beamline: Path, nersc: Path
) -> None:
    write(beamline / "v.bin")
    emulator.inject({"path": "/v.bin", "error": "VERIFY_CHECKSUM", "times": None})
    tc = client_for(emulator)
    task_id = tc.submit_transfer(transfer_data(nersc, ("/v.bin", "v.bin")))["task_id"]
    time.sleep(0.3)
    doc = tc.get_task(task_id)
    assert doc["nice_status"] == "VERIFY_CHECKSUM" and doc["faults"] >= 2
    assert not (nersc / "v.bin").exists() and not list(nersc.glob(".*globus-part"))
    emulator.clear_faults()
    assert wait_final(tc, task_id)["status"] == "SUCCEEDED" and (nersc / "v.bin").exists()


def test_file_operations(emulator: EmulatorServer, beamline: Path) -> None:
    for name in ("b.bin", "a.bin", ".hidden", "c.bin"):
        write(beamline / "d" / name)
    (beamline / "d" / "link").symlink_to("a.bin")
    tc = client_for(emulator)
    names = [e["name"] for e in tc.operation_ls(BEAMLINE_ID, path="/d/", show_hidden=False)]
    assert names == ["a.bin", "b.bin", "c.bin", "link"]
    page = tc.operation_ls(BEAMLINE_ID, path="/d/", limit=2, offset=2)
    assert page["has_next_page"] is True and [e["name"] for e in page] == ["b.bin", "c.bin"]
    entry = tc.operation_stat(BEAMLINE_ID, "/d/link")
    assert entry["type"] == "link" and entry["link_target"] == "a.bin" and entry["size"] == 1000
    assert tc.operation_stat(BEAMLINE_ID, "/d/a.bin")["last_modified"].endswith("+00:00")
    for path, status in (("/nope/", 404), ("/d/a.bin", 502), ("/../", 403)):
        with pytest.raises(globus_sdk.TransferAPIError) as info:
            tc.operation_ls(BEAMLINE_ID, path=path)
        assert info.value.http_status == status, path
    assert tc.operation_mkdir(BEAMLINE_ID, "/new")["code"] == "DirectoryCreated"
    assert tc.operation_rename(BEAMLINE_ID, "/new", "/newer")["code"] == "FileRenamed"
    assert (beamline / "newer").is_dir()
    delete = globus_sdk.DeleteData(BEAMLINE_ID, recursive=True)
    delete.add_item("/d")
    assert wait_final(tc, tc.submit_delete(delete)["task_id"])["status"] == "SUCCEEDED"
    assert not (beamline / "d").exists()


def test_bad_submissions_are_refused(emulator: EmulatorServer, beamline: Path, nersc: Path) -> None:
    tc = client_for(emulator)
    for kw in ({"label": "two\nlines"}, {"label": " edge"}, {"deadline": "tomorrow"}):
        with pytest.raises(globus_sdk.TransferAPIError) as info:
            tc.submit_transfer(transfer_data(nersc, ("/a", "a"), **kw))
        assert info.value.http_status == 400, kw
    with pytest.raises(globus_sdk.TransferAPIError) as empty:
        tc.submit_transfer(globus_sdk.TransferData(BEAMLINE_ID, NERSC_ID))
    assert empty.value.code == "ClientError.BadRequest.NoTransferItems"
    unknown_collection = globus_sdk.TransferData(BEAMLINE_ID, "5" * 8 + "-5555-5555-5555-" + "5" * 12)
    unknown_collection.add_item("/a", "/a")
    with pytest.raises(globus_sdk.TransferAPIError) as unknown:
        tc.submit_transfer(unknown_collection)
    assert unknown.value.http_status == 404
    assert emulator.tasks() == []


def test_fault_rules_are_validated() -> None:
    for bad in (
        {"call": "nope", "status": 500},
        {"call": "get_task", "status": 200},
        {"path": "*", "error": "X"},
        {},
    ):
        with pytest.raises(FaultSpecError):
            parse_rule(bad)


def test_cli_serves_injects_faults_over_http_and_saves_state(beamline: Path, tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    proc, url = start_emulator_process(beamline, "--state-file", str(state), "--task-latency-s", "30")
    try:

        def post(path: str, body: object) -> dict:
            request = urllib.request.Request(url + path, data=json.dumps(body).encode(), method="POST")
            with urllib.request.urlopen(request, timeout=5) as answer:
                return json.load(answer)

        with pytest.raises(urllib.error.HTTPError) as bad:
            post("_emulator/faults", [{"call": "nope", "status": 500}])
        assert bad.value.code == 400
        assert post("_emulator/faults", [{"call": "task_list", "status": 503, "times": 1}])["faults"]
        tc = make_transfer_client(
            GlobusCredentials(CLIENT_ID, CLIENT_SECRET),
            transfer_base_url=url,
            auth_base_url=url,
            retry_config=NO_RETRY,
        )
        with pytest.raises(globus_sdk.TransferAPIError) as injected:
            tc.task_list()
        assert injected.value.http_status == 503
        write(beamline / "a.bin")
        task_id = tc.submit_transfer(transfer_data(tmp_path, ("/a.bin", "a.bin")))["task_id"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert [t["task_id"] for t in json.loads(state.read_text())["tasks"]] == [task_id]
    finally:
        stop_process(proc)
