"""``CodeServerRunLauncher``'s health answers against a real gRPC code server (``dagster api
grpc``): a run is failed only when the daemon's one retry of it can be made.

The whole story (a code server killed under its runs, the daemon retrying them) is
``tests/e2e/test_deployment_recovery.py``; this pins each answer in seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.launcher import WorkerStatus
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster._grpc.client import DagsterGrpcClient

from cosmic_dagster.cli.services import free_port
from cosmic_dagster.instance import code_server_launcher
from cosmic_dagster.instance.code_server_launcher import RETRY_WAIT, CodeServerRunLauncher

pytestmark = pytest.mark.slow

REFRESH_S = 1.0  # stands for the daemon's 70 s workspace refresh


class CodeServer:
    """A ``dagster api grpc`` process serving an empty code location on a fixed port."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.defs = tmp_path / "defs.py"
        self.defs.write_text("import dagster as dg\n\ndefs = dg.Definitions()\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        dagster = str(Path(sys.executable).parent / "dagster")
        serve = [dagster, "api", "grpc", "-h", "127.0.0.1", "-p", str(self.port), "-f", str(self.defs)]
        self.proc = subprocess.Popen(serve, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        client = DagsterGrpcClient(host="127.0.0.1", port=self.port)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                client.ping("up")
                return
            except Exception:
                time.sleep(0.2)
        raise TimeoutError("the code server did not start")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[CodeServer]:
    server = CodeServer(tmp_path)
    server.start()
    yield server
    if server.proc and server.proc.poll() is None:
        server.kill()


@pytest.fixture
def launcher(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[CodeServerRunLauncher, dg.DagsterInstance]]:
    monkeypatch.setattr(code_server_launcher, "WORKSPACE_REFRESH_S", REFRESH_S)
    with dg.DagsterInstance.ephemeral() as instance:
        launcher = CodeServerRunLauncher()
        launcher.register_instance(instance)
        yield launcher, instance


def started_run(instance: dg.DagsterInstance, port: int | None) -> dg.DagsterRun:
    """A STARTED run as the default launcher leaves it: tagged with its code server's address."""
    tags = {} if port is None else {GRPC_INFO_TAG: json.dumps({"host": "127.0.0.1", "port": port})}
    run = dg.DagsterRun(
        job_name="scan_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED, tags=tags
    )
    return instance.add_run(run)


def told(instance: dg.DagsterInstance, run: dg.DagsterRun) -> list[str]:
    events = instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    return [e.dagster_event.message or "" for e in events if e.dagster_event]


def test_a_restarted_server_fails_its_runs_only_after_the_daemon_can_see_it(server, launcher):
    launcher, instance = launcher
    run = started_run(instance, server.port)
    # The server answers but does not execute the run (it was restarted): not failed yet.
    first = launcher.check_run_worker_health(run)
    assert first.status == WorkerStatus.RUNNING and "not executing this run" in first.msg
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    assert len([m for m in told(instance, run) if RETRY_WAIT in m]) == 1
    time.sleep(REFRESH_S)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.FAILED


def test_a_server_that_is_down_fails_nothing_and_a_new_one_starts_the_wait_again(server, launcher):
    launcher, instance = launcher
    run = started_run(instance, server.port)
    launcher.check_run_worker_health(run)
    time.sleep(REFRESH_S)
    server.kill()
    down = launcher.check_run_worker_health(run)
    assert down.status == WorkerStatus.RUNNING and "not answering" in down.msg
    server.start()  # same port, new server id: the daemon may not have reloaded this one yet
    assert launcher.check_run_worker_health(run).status == WorkerStatus.RUNNING
    time.sleep(REFRESH_S)
    assert launcher.check_run_worker_health(run).status == WorkerStatus.FAILED


def test_a_run_without_a_code_server_is_unknown(launcher):
    launcher, instance = launcher
    result = launcher.check_run_worker_health(started_run(instance, None))
    assert result.status == WorkerStatus.UNKNOWN
