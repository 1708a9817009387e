"""Shared fixtures: an RSA client key, the SFAPI emulator on loopback, an adapter factory, job specs.

sfapi-client's own waits are shortened here only (reference notes, "Offline testing"): its fixed
1 s task-polling sleep and tenacity's exponential retry storm (65 s against a dead server).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import sfapi_client._sync.compute
import sfapi_client._sync.jobs
import tenacity
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sfapi_client import Client

from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.compute.sfapi.compute import SfapiCompute, SfapiCredentials
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.emulators.sfapi.scheduler import Scheduler, SimulatedScheduler
from cosmic_dagster.emulators.sfapi.server import Faults, SfapiEmulator

CLIENT_ID = "abcdefghijklm"


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def private_pem(rsa_key: rsa.RSAPrivateKey) -> str:
    return rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture(scope="session")
def public_pem(rsa_key: rsa.RSAPrivateKey) -> bytes:
    return rsa_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@pytest.fixture(scope="session")
def credentials(private_pem: str) -> SfapiCredentials:
    return SfapiCredentials(CLIENT_ID, private_pem)


@pytest.fixture(autouse=True)
def _fast_sfapi_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short sfapi-client sleeps and retry storms (tests only; production keeps the library's)."""
    quick = lambda seconds=0: __import__("time").sleep(min(float(seconds), 0.05))  # noqa: E731
    monkeypatch.setattr(sfapi_client._sync.compute, "_SLEEP", quick)
    monkeypatch.setattr(sfapi_client._sync.jobs, "_SLEEP", quick)
    for method in (Client.get, Client.post, Client.put, Client.delete):
        monkeypatch.setattr(method.retry, "wait", tenacity.wait_none())
        monkeypatch.setattr(method.retry, "stop", tenacity.stop_after_attempt(4))


@pytest.fixture(autouse=True)
def _no_sfapi_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("PATH_NERSC_ID", "PATH_NERSC_PRI_KEY", "SFAPI_CLIENT_ID", "SFAPI_KEY_FILE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def nersc(tmp_path: Path) -> Path:
    """The directory tree that plays NERSC's filesystem (the emulator's allowed root)."""
    path = tmp_path / "nersc"
    path.mkdir()
    return path


@pytest.fixture
def start_emulator(public_pem: bytes, nersc: Path) -> Iterator[Callable[..., SfapiEmulator]]:
    """Factory: ``start_emulator(faults=..., scheduler=..., token_ttl_s=...)``; all stopped afterwards."""
    started: list[SfapiEmulator] = []

    def start(
        *,
        scheduler: Scheduler | None = None,
        faults: Faults | None = None,
        public_key_pem: bytes | None = None,
        **kw: object,
    ) -> SfapiEmulator:
        emulator = SfapiEmulator(
            client_id=CLIENT_ID,
            public_key_pem=public_key_pem or public_pem,
            scheduler=scheduler or SimulatedScheduler(queue_wait_s=0.2, spool_dir=nersc / ".spool"),
            allowed_roots=[nersc],
            faults=faults,
            **kw,  # type: ignore[arg-type]
        ).start()
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


@pytest.fixture
def emulator(start_emulator: Callable[..., SfapiEmulator]) -> SfapiEmulator:
    return start_emulator()


@pytest.fixture
def make_compute(credentials: SfapiCredentials, tmp_path: Path) -> Iterator[Callable[..., SfapiCompute]]:
    """Factory: an adapter on an emulator with test-sized poll intervals and its own ledger."""
    made: list[SfapiCompute] = []

    def make(emulator: SfapiEmulator, ledger: Ledger | None = None, **kw: object) -> SfapiCompute:
        settings: dict[str, object] = {
            "poll_interval_s": 0.2,
            "max_poll_interval_s": 0.5,
            "not_found_grace_s": 10.0,
            "api_patience_s": 5.0,
            **kw,
        }
        compute = SfapiCompute(
            ledger or Ledger(tmp_path / "ledger.sqlite"),
            credentials=credentials,
            api_base_url=emulator.api_base_url,
            token_url=emulator.token_url,
            **settings,  # type: ignore[arg-type]
        )
        made.append(compute)
        return compute

    yield make
    for compute in made:
        compute.close()


@pytest.fixture
def make_spec(nersc: Path) -> Callable[..., JobSpec]:
    """Factory: a job that logs, sleeps ``seconds``, writes summary.json and a binary preview.png."""

    def make(
        name: str = "recon.scan1.0123abcd", *, seconds: float = 0.3, body: str = "", header: str = ""
    ) -> JobSpec:
        workdir = nersc / "recon" / name
        script = "\n".join(
            [
                "#!/bin/bash",
                *([header] if header else []),
                "set -euo pipefail",
                f"cd {workdir}",
                'echo "starting $SLURM_JOB_NAME threads=$OMP_NUM_THREADS"',
                f"sleep {seconds}",
                body,
                'echo \'{"iterations": 3, "error": 0.01}\' > summary.json',
                "printf '\\x89PNG\\r\\n\\x1a\\n\\x00\\xff' > preview.png",
                'echo "done"',
                "",
            ]
        )
        return JobSpec(name=name, script=script, workdir=str(workdir), env={"OMP_NUM_THREADS": "1"})

    return make


@pytest.fixture
def key_files(tmp_path: Path, private_pem: str) -> tuple[Path, Path]:
    """(key file mode 600, client id file) as Iris gives them."""
    key_file = tmp_path / "priv_key.pem"
    key_file.write_text(private_pem)
    key_file.chmod(0o600)
    id_file = tmp_path / "clientid.txt"
    id_file.write_text(CLIENT_ID + "\n")
    return key_file, id_file
