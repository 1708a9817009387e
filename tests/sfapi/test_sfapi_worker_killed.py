"""A run worker SIGKILLed while waiting on its job; the retried run reattaches (no duplicate job)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import pytest

from cosmic_dagster.compute.base import LEDGER_KIND
from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.emulators.sfapi.server import SfapiEmulator

WORKER = Path(__file__).with_name("sfapi_worker.py")


def start_worker(emulator: SfapiEmulator, key_files: tuple[Path, Path], ledger: Path, spec: JobSpec):
    key_file, id_file = key_files
    env = {
        **os.environ,
        "PATH_NERSC_ID": str(id_file),
        "PATH_NERSC_PRI_KEY": str(key_file),
        "SFAPI_API_BASE_URL": emulator.api_base_url,
        "SFAPI_TOKEN_URL": emulator.token_url,
    }
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(ledger), json.dumps(asdict(spec))],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_killed_worker_then_retry_reattaches_to_the_same_job(
    emulator: SfapiEmulator,
    make_spec: Callable[..., JobSpec],
    key_files: tuple[Path, Path],
    tmp_path: Path,
) -> None:
    spec = make_spec(seconds=4)
    ledger_path = tmp_path / "ledger.sqlite"
    ledger = Ledger(ledger_path)

    first = start_worker(emulator, key_files, ledger_path, spec)
    deadline = time.monotonic() + 60
    while ledger.get(LEDGER_KIND, spec.name) is None:
        assert first.poll() is None, first.stderr.read() if first.stderr else ""
        assert time.monotonic() < deadline, "the worker never recorded its job id"
        time.sleep(0.1)
    first.kill()
    first.wait(timeout=10)
    assert emulator.jobs()[0]["state"] in ("PENDING", "RUNNING")  # killed mid-wait

    retry = start_worker(emulator, key_files, ledger_path, spec)
    out, err = retry.communicate(timeout=120)

    assert retry.returncode == 0, err
    outcome = json.loads(out.strip().splitlines()[-1])
    assert outcome["reattached"] and outcome["state"] == "COMPLETED"
    assert outcome["job_id"] == ledger.get(LEDGER_KIND, spec.name)["job_id"]
    assert [job["name"] for job in emulator.jobs()] == [spec.name]
    assert emulator.request_counts()["submit"] == 1
