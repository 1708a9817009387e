"""Shared fixtures: a Globus emulator on loopback, an endpoints file, scans and an adapter factory."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import globus_sdk
import pytest
from globus_sdk.transport import RetryConfig

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.emulators.globus.server import EmulatorServer
from cosmic_dagster.transfer.globus.transfer import GlobusCredentials, GlobusTransfer, make_transfer_client
from cosmic_dagster.transfer.protocol import TransferItem

BEAMLINE_ID = "44ae904c-ab64-4145-a8f0-7287de38324d"
NERSC_ID = "df82346e-9a15-11ea-b3c4-0ae144191ee3"
CLIENT_ID = "7d3c2a7e-5b2f-4a51-9a0e-0c6d8b1f2e11"
CLIENT_SECRET = "s3cr3t-Z9xQ-never-log-me"
FAST_RETRIES = RetryConfig(max_retries=3, max_sleep=0.3)


@pytest.fixture(autouse=True)
def _no_globus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests give base URLs explicitly; a developer's environment must not redirect them."""
    for name in list(os.environ):
        if name.startswith(("GLOBUS_SDK_", "GLOBUS_CLIENT_")):
            monkeypatch.delenv(name)


@pytest.fixture
def beamline(tmp_path: Path) -> Path:
    path = tmp_path / "beamline"
    path.mkdir()
    return path


@pytest.fixture
def nersc(tmp_path: Path) -> Path:
    path = tmp_path / "nersc"
    path.mkdir()
    return path


@pytest.fixture
def credentials() -> GlobusCredentials:
    return GlobusCredentials(CLIENT_ID, CLIENT_SECRET)


def emulator_for(beamline: Path, **kw: object) -> EmulatorServer:
    """The beamline collection exposes ``beamline``; the NERSC one exposes real absolute paths."""
    kw.setdefault("retry_interval_s", 0.05)
    return EmulatorServer({BEAMLINE_ID: beamline, NERSC_ID: "/"}, {CLIENT_ID: CLIENT_SECRET}, **kw)  # type: ignore[arg-type]


@pytest.fixture
def emulator(beamline: Path) -> Iterator[EmulatorServer]:
    with emulator_for(beamline) as emu:
        yield emu


@pytest.fixture
def endpoints_file(tmp_path: Path, nersc: Path) -> Path:
    path = tmp_path / "config.yml"
    path.write_text(
        "globus:\n"
        "  globus_endpoints:\n"
        f"    data7012: {{root_path: /, uri: data7012.lbl.gov, uuid: {BEAMLINE_ID}}}\n"
        f"    nersc7012: {{root_path: {nersc}, uri: nersc.gov, uuid: {NERSC_ID}}}\n"
    )
    return path


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    return Ledger(tmp_path / "state" / "ledger.sqlite")


AdapterFactory = Callable[..., GlobusTransfer]


@pytest.fixture
def make_adapter(
    endpoints_file: Path, credentials: GlobusCredentials, ledger: Ledger, emulator: EmulatorServer
) -> AdapterFactory:
    def make(url: str | None = None, creds: GlobusCredentials | None = None, **kw: object) -> GlobusTransfer:
        kw.setdefault("poll_interval_s", 0.05)
        kw.setdefault("deadline_s", 60)
        kw.setdefault("retry_config", FAST_RETRIES)
        base = url or emulator.url
        return GlobusTransfer.from_config(
            endpoints_file,
            "data7012",
            "nersc7012",
            creds or credentials,
            ledger,
            transfer_base_url=base,
            auth_base_url=base,
            **kw,  # type: ignore[arg-type]
        )

    return make


@pytest.fixture
def client(emulator: EmulatorServer, credentials: GlobusCredentials) -> globus_sdk.TransferClient:
    return make_transfer_client(
        credentials, transfer_base_url=emulator.url, auth_base_url=emulator.url, retry_config=FAST_RETRIES
    )


def make_scan(root: Path, relpath: str, size: int = 4096, seed: int = 0) -> TransferItem:
    """A scan file of pseudo-random bytes under ``root`` and its TransferItem."""
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    data = hashlib.shake_256(f"{relpath}:{seed}".encode()).digest(size)
    path.write_bytes(data)
    return TransferItem(
        key=scan_key(relpath), relpath=relpath, size=size, sha256=hashlib.sha256(data).hexdigest()
    )


def scan_relpath(n: int, day: str = "240315") -> str:
    return f"20{day[:2]}/{day[2:4]}/{day}/NS_{day}{n:03d}_ccdframes_0_0.cxi"


def transfer_tasks(emulator: EmulatorServer) -> list[dict]:
    return [t for t in emulator.tasks() if t["type"] == "TRANSFER"]


def start_emulator_process(beamline: Path, *args: str, port: int = 0) -> tuple[subprocess.Popen[str], str]:
    """The emulator CLI in a subprocess; returns it once it printed its URL."""
    cmd = [
        sys.executable,
        "-m",
        "cosmic_dagster.emulators.globus.server",
        "--port",
        str(port),
        "--collection",
        f"{BEAMLINE_ID}={beamline}",
        "--collection",
        f"{NERSC_ID}=/",
        "--client",
        f"{CLIENT_ID}:{CLIENT_SECRET}",
        "--retry-interval-s",
        "0.05",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("listening on http://"):
        proc.kill()
        raise RuntimeError(f"emulator did not start: {line!r}")
    return proc, line.split()[-1] + "/"


def stop_process(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout:
        proc.stdout.close()
