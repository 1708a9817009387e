"""Every long-running command stops what it started on SIGTERM and SIGHUP, as on Ctrl-C (issue 12.9).

systemd and docker stop a service with SIGTERM, a closed terminal sends SIGHUP. Each command runs
here as a subprocess whose environment carries a unique mark; every process it starts inherits the
mark, so "nothing left" is checked over the whole machine (/proc), re-parented orphans included.
"""

from __future__ import annotations

import contextlib
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sfapi_client import Client
from sfapi_client.compute import Machine

from cosmic_dagster.cli.services import free_port
from cosmic_dagster.domain.processes import process_start_time
from cosmic_dagster.emulators.sfapi.server import API_PREFIX
from tests.e2e.conftest import postgres_or_skip

MARK = "COSMIC_STOP_SIGNAL_TEST"


def marked_pids(token: str) -> list[int]:
    """Live processes (zombies excluded) whose environment carries ``MARK=token``."""
    needle = f"{MARK}={token}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile, or not ours
            continue
        if needle in environ and process_start_time(int(entry.name)) is not None:
            found.append(int(entry.name))
    return found


class Command:
    """A command line in a subprocess with the mark; its output lines arrive on a queue."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.token = uuid.uuid4().hex
        full_env = {**os.environ, **(env or {}), MARK: self.token, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", *argv],  # SIGABRT dumps every thread's stack
            env=full_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.output.append(line)
            if text in line:
                return
        raise AssertionError(f"no {text!r} within {timeout_s:.0f} s; output:\n{''.join(self.output)[-3000:]}")

    def stop_with(self, signum: int, timeout_s: float) -> int:
        """Send ``signum``; the exit code once it exited (fails the test if it does not)."""
        self.proc.send_signal(signum)
        try:
            return self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.send_signal(signal.SIGABRT)  # where it hangs, for the failure message
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(10)
            raise AssertionError(
                f"still running {timeout_s:.0f} s after {signal.Signals(signum).name}; "
                f"its last output:\n{self.drain()[-4000:]}"
            ) from None

    def drain(self) -> str:
        """Everything it printed so far."""
        time.sleep(0.5)  # let the reader thread catch up with the last lines
        while True:
            try:
                self.output.append(self.lines.get_nowait())
            except queue.Empty:
                return "".join(self.output)

    def left_behind(self) -> list[int]:
        """Marked processes still there a moment after the command exited (children being reaped)."""
        deadline = time.monotonic() + 5
        while (left := marked_pids(self.token)) and time.monotonic() < deadline:
            time.sleep(0.2)
        return left

    def cleanup(self) -> None:
        """Kill what a failing test left behind (only the processes carrying this test's mark)."""
        for pid in marked_pids(self.token):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def commands() -> Iterator[list[Command]]:
    started: list[Command] = []
    yield started
    for command in started:
        command.cleanup()


STOPS = [signal.SIGTERM, signal.SIGHUP]


@pytest.mark.parametrize("signum", STOPS, ids=lambda s: signal.Signals(s).name)
def test_globus_emulator_cli_stops_and_saves_its_state(
    signum: int, tmp_path: Path, commands: list[Command]
) -> None:
    state = tmp_path / "globus-state.json"
    cmd = Command(
        [
            "cosmic_dagster.emulators.globus.server",
            "--collection",
            f"44ae904c-ab64-4145-a8f0-7287de38324d={tmp_path}",
            "--client",
            "id:secret",
            "--state-file",
            str(state),
        ]
    )
    commands.append(cmd)
    cmd.wait_for("listening on http://", 60)
    state.unlink(missing_ok=True)
    assert cmd.stop_with(signum, 30) == 0
    assert state.is_file()  # saved on the way out, as on Ctrl-C
    assert cmd.left_behind() == []


@pytest.mark.parametrize("signum", STOPS, ids=lambda s: signal.Signals(s).name)
def test_sfapi_emulator_cli_stops_with_its_running_job(
    signum: int, tmp_path: Path, commands: list[Command]
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = tmp_path / "pub.pem"
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    cmd = Command(
        [
            "cosmic_dagster.emulators.sfapi.server",
            "--client-id",
            "abcdefghijklm",
            "--public-key",
            str(public),
            "--allowed-root",
            str(tmp_path),
            "--queue-wait-s",
            "0",
        ]
    )
    commands.append(cmd)
    cmd.wait_for("listening on http://", 60)
    base = cmd.output[-1].split()[-1].rstrip("/")
    with Client(
        client_id="abcdefghijklm",
        secret=private,
        api_base_url=f"{base}{API_PREFIX}",
        token_url=f"{base}/token",
    ) as client:
        client.compute(Machine.perlmutter).submit_job(
            f"#!/bin/bash\n#SBATCH --output={tmp_path}/job.out\nsleep 300\n"
        )
    deadline = time.monotonic() + 30
    while len(marked_pids(cmd.token)) < 2 and time.monotonic() < deadline:  # the emulator and its job
        time.sleep(0.2)
    assert len(marked_pids(cmd.token)) >= 2, "the job never started"
    assert cmd.stop_with(signum, 30) == 0
    assert cmd.left_behind() == []


@pytest.mark.parametrize("signum", STOPS, ids=lambda s: signal.Signals(s).name)
def test_watch_stops(signum: int, tmp_path: Path, commands: list[Command]) -> None:
    root = tmp_path / "beamline"
    root.mkdir()
    cmd = Command(
        [
            "cosmic_dagster.cli",
            "watch",
            "--url",
            f"http://127.0.0.1:{free_port()}",  # nobody there: the watcher keeps retrying
            "--root",
            str(root),
            "--state-file",
            str(tmp_path / "watch-state.json"),
        ],
        env={"COSMIC_DATA_ROOT": str(tmp_path / "data"), "COSMIC_SENSOR_GRACE_S": "30"},
    )
    commands.append(cmd)
    cmd.wait_for("watching", 60)
    assert cmd.stop_with(signum, 30) == 0
    assert cmd.left_behind() == []


@pytest.mark.e2e
@pytest.mark.slow
def test_demo_keep_stops_its_services_on_sigterm(tmp_path: Path, commands: list[Command]) -> None:
    """The case seen: ``demo --keep`` killed with SIGTERM left webserver, daemon and watcher running."""
    cmd = Command(
        ["cosmic_dagster.cli", "demo", "--home", str(tmp_path), "--scans", "0", "--keep"],
        env={"COSMIC_SETTLE_SECONDS": "0.5"},
    )
    commands.append(cmd)
    cmd.wait_for("demo OK", 300)
    children = set(marked_pids(cmd.token)) - {cmd.proc.pid}
    assert len(children) >= 3, children  # daemon, webserver, watcher (and what the daemon spawned)
    assert cmd.stop_with(signal.SIGTERM, 120) == 0
    assert cmd.left_behind() == []


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.postgres
def test_deploy_up_stops_its_services_on_sighup(tmp_path: Path, commands: list[Command]) -> None:
    pg = postgres_or_skip()
    port, code_port = free_port(), free_port()
    cmd = Command(
        [
            "cosmic_dagster.cli",
            "deploy",
            "up",
            "--home",
            str(tmp_path),
            "--port",
            str(port),
            "--code-port",
            str(code_port),
        ],
        env=pg.env(),
    )
    commands.append(cmd)
    try:
        cmd.wait_for("Dagster UI:", 300)
        children = set(marked_pids(cmd.token)) - {cmd.proc.pid}
        assert len(children) >= 3, children  # code server, daemon, webserver
        assert cmd.stop_with(signal.SIGHUP, 120) == 0
        assert cmd.left_behind() == []
    finally:
        cmd.cleanup()
        pg.drop_database()
