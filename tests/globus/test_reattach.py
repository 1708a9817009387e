"""Idempotency under crashes: a killed run worker, a restarted emulator; never a second task."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.transfer.globus.transfer import LEDGER_KIND
from cosmic_dagster.transfer.protocol import BatchReport

from .conftest import (
    CLIENT_ID,
    CLIENT_SECRET,
    AdapterFactory,
    emulator_for,
    make_scan,
    scan_relpath,
    start_emulator_process,
    stop_process,
    transfer_tasks,
)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def recorded_task_ids(ledger: Ledger) -> list[str]:
    return [
        r["task_id"] for n, r in ledger.all(LEDGER_KIND).items() if n.startswith("batch:") and r["task_id"]
    ]


def test_worker_killed_mid_wait_then_step_retried_reattaches(
    beamline: Path, endpoints_file: Path, ledger: Ledger, make_adapter: AdapterFactory
) -> None:
    items = [make_scan(beamline, scan_relpath(i), 150_000) for i in range(3)]
    with emulator_for(beamline, bandwidth_mbps=2.4) as emu:  # 300 kB/s: ~1.5 s of copying
        env = {**os.environ, "GLOBUS_CLIENT_ID": CLIENT_ID, "GLOBUS_CLIENT_SECRET": CLIENT_SECRET}
        worker = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__).with_name("copy_worker.py")),
                str(endpoints_file),
                str(ledger.path),
                emu.url,
                json.dumps([dataclasses.asdict(i) for i in items]),
            ],
            env=env,
        )
        try:
            wait_for(lambda: recorded_task_ids(ledger), what="the worker to record its task id")
            worker.send_signal(signal.SIGKILL)
            worker.wait(timeout=10)
        finally:
            if worker.poll() is None:
                worker.kill()
        assert transfer_tasks(emu)[0]["status"] == "ACTIVE"  # killed mid-wait, not after the end
        report = make_adapter(url=emu.url).copy_batch(items, "retried step")
        tasks = transfer_tasks(emu)
        submits = [c for c in emu.calls() if c["call"] == "submit_transfer"]
    assert len(tasks) == 1 and len(submits) == 1
    assert report.task_id == tasks[0]["task_id"] == recorded_task_ids(ledger)[0]
    assert all(o.ok and not o.already_present for o in report.outcomes.values())


def test_emulator_restarted_mid_task_resumes_it(
    beamline: Path, tmp_path: Path, make_adapter: AdapterFactory
) -> None:
    items = [make_scan(beamline, scan_relpath(i), 150_000) for i in range(3)]
    state = tmp_path / "emulator-state.json"
    proc, url = start_emulator_process(beamline, "--state-file", str(state), "--bandwidth-mbps", "2.4")
    port = int(url.rstrip("/").rsplit(":", 1)[1])

    def tasks() -> list[dict]:
        with urllib.request.urlopen(url + "_emulator/tasks", timeout=5) as answer:
            return [t for t in json.load(answer)["tasks"] if t["type"] == "TRANSFER"]

    result: dict[str, BatchReport | BaseException] = {}

    def run() -> None:
        try:
            result["report"] = make_adapter(url=url, unreachable_grace_s=60).copy_batch(items, "restart")
        except BaseException as exc:
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(lambda: "error" in result or any(t["bytes_transferred"] > 0 for t in tasks()), what="bytes")
        assert "error" not in result, result["error"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        time.sleep(0.5)
        proc, url2 = start_emulator_process(
            beamline, "--state-file", str(state), "--bandwidth-mbps", "24", port=port
        )
        assert url2 == url
        thread.join(timeout=60)
        final = tasks()
    finally:
        stop_process(proc)
        thread.join(timeout=5)
    assert "error" not in result, result.get("error")
    report = result["report"]
    assert isinstance(report, BatchReport)
    assert len(final) == 1 and final[0]["status"] == "SUCCEEDED"
    assert report.task_id == final[0]["task_id"]
    assert all(o.ok for o in report.outcomes.values())


@pytest.mark.parametrize("earlier", ["SUCCEEDED", "FAILED"])
def test_rerun_after_a_finished_task_uses_it(
    earlier: str, beamline: Path, make_adapter: AdapterFactory, emulator: EmulatorServer, ledger: Ledger
) -> None:
    """A step re-executed after its task ended: successes are kept, a failed task's rest resubmitted."""
    items = [make_scan(beamline, scan_relpath(i)) for i in range(2)]
    if earlier == "FAILED":
        emulator.inject(
            {"path": f"*/{Path(items[1].relpath).name}", "error": "ENDPOINT_ERROR", "times": None}
        )
    # what a worker killed right after submitting leaves behind: the ledger records, no outcome
    adapter = make_adapter()
    first = adapter._submit_chunk(items, "killed").task_id
    wait_for(lambda: transfer_tasks(emulator)[0]["files_transferred"] >= 1, what="the first file")
    if earlier == "FAILED":
        adapter.client.cancel_task(first)
        emulator.clear_faults()
    wait_for(lambda: transfer_tasks(emulator)[0]["status"] == earlier, what=earlier)
    report = make_adapter().copy_batch(items, "rerun")
    assert all(o.ok for o in report.outcomes.values())
    assert len(transfer_tasks(emulator)) == (1 if earlier == "SUCCEEDED" else 2)
