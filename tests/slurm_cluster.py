"""A real one-node Slurm for the tests marked ``slurm`` (scripts/local-slurm.sh).

The session fixture installs and starts Slurm when it is not running yet. Several pytest sessions
(and several fixtures of one session) may share it, so each registers itself in
``/run/local-slurm-tests/``; the last one to leave stops Slurm, and only if a test session started
it (a Slurm that was running before is left running). Where Slurm cannot be had, the tests are
skipped, except in CI (``CI=true``) or with ``COSMIC_REQUIRE_SLURM=1``, where that fails.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "local-slurm.sh"
USERS_DIR = Path("/run/local-slurm-tests")
STARTED_BY_TESTS = USERS_DIR / "started-by-tests"


def _run(action: str, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(SCRIPT), action, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true" or os.environ.get("COSMIC_REQUIRE_SLURM") == "1":
        pytest.fail(f"Slurm is required here but unavailable: {reason}", pytrace=False)
    pytest.skip(f"no local Slurm: {reason}")


@contextmanager
def _registry() -> Iterator[None]:
    """Exclusive access to the list of sessions using the local Slurm."""
    USERS_DIR.mkdir(exist_ok=True)
    with open(USERS_DIR / "lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _live_users() -> list[Path]:
    """Registered users whose process still exists (a killed session must not keep Slurm alive)."""
    live = []
    for entry in USERS_DIR.glob("user-*"):
        if Path(f"/proc/{entry.name.split('-')[1]}").exists():
            live.append(entry)
        else:
            entry.unlink(missing_ok=True)
    return live


def _start() -> None:
    for action, timeout in (("install", 900), ("start", 180)):
        try:
            done = _run(action, timeout=timeout)
        except subprocess.TimeoutExpired:
            _unavailable(f"'local-slurm.sh {action}' took more than {timeout} s")
        if done.returncode != 0:
            _unavailable(f"'local-slurm.sh {action}' failed:\n{(done.stdout + done.stderr)[-3000:]}")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[Path]:
    """A running local Slurm; yields the control script (for ``restart-controller``)."""
    if os.geteuid() != 0:
        if _run("status", timeout=180).returncode != 0:
            _unavailable("Slurm is not running and starting it needs root")
        yield SCRIPT
        return
    me = USERS_DIR / f"user-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    with _registry():
        if _run("status", timeout=180).returncode != 0:
            _start()
            STARTED_BY_TESTS.touch()
        me.touch()
    try:
        yield SCRIPT
    finally:
        with _registry():
            me.unlink(missing_ok=True)
            if not _live_users() and STARTED_BY_TESTS.exists():
                _run("stop", timeout=180)
                STARTED_BY_TESTS.unlink()


@pytest.fixture
def unique() -> str:
    """A prefix that keeps job names of this test apart from earlier sessions' jobs (Slurm remembers)."""
    return f"t{uuid.uuid4().hex[:8]}"
