"""``CodeServerRunLauncher``: Dagster's default launcher plus a run worker health check.

Runs execute in a subprocess of the gRPC code server. If one dies, the code server notices and
fails the run; but if the code server itself dies (container restart, OOM, SIGKILL) nobody is
left to notice, and its runs would stay STARTED forever while their scans wait. This launcher
lets run monitoring ask the code server that started a run whether it still executes it.

Run monitoring fails a run on any answer but RUNNING or SUCCESS, and ``run_retries`` then
re-executes it at once through the daemon's copy of the code location. That retry is made once:
if it raises, Dagster marks the run ``dagster/will_retry=false`` for good. So a run is failed only
when its retry can be made:

* the code server does not answer -> RUNNING (presumed): failing now would retry into a server
  that is down, and the retry would be lost;
* the code server answers "not running it" (it was restarted) -> RUNNING until that server has
  answered for longer than the daemon's workspace refresh, then FAILED. A refresh made while the
  server was down leaves the daemon's code location in error until the next one, and a retry made
  in between would be lost too;
* the code server runs it -> RUNNING.

The step of the retried run reattaches to its Globus task and Slurm jobs through the ledger.

Use it with ``cosmic-dagster-code-server`` (``dagster api grpc``, see ``code_server.py``) as the code
server, not ``dagster code-server start``: that proxy answers for its newest child server only, so
after a code reload runs still executing in the previous one would wrongly look dead.

Dagster internals used (1.13.27): ``DefaultRunLauncher._get_grpc_client_for_termination`` (the
gRPC client of the server a run was started on, from the run's tags), the gRPC request types, and
the daemon's workspace refresh period (``dagster._daemon.controller``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from dagster._core.events import EngineEventData
from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._daemon.controller import RELOAD_WORKSPACE_INTERVAL, THREAD_CHECK_INTERVAL
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import deserialize_value
from dagster._serdes.config_class import ConfigurableClassData

HEALTH_TIMEOUT_S = 10
# The daemon refreshes its workspace when the last refresh is older than RELOAD_WORKSPACE_INTERVAL,
# checked every THREAD_CHECK_INTERVAL: a server that answered this long has been seen by a refresh.
WORKSPACE_REFRESH_S = RELOAD_WORKSPACE_INTERVAL + 2 * THREAD_CHECK_INTERVAL
#: What the log of a run waiting for its retry says (after where and why).
RETRY_WAIT = "it is failed and retried once the daemon has reloaded that server"


@dataclass
class _Sighting:
    """A code server process (its gRPC server id), when this launcher first saw it answer, and the
    runs already told that they wait for it (so each is told once per restart)."""

    server_id: str
    since: float
    told: set[str] = field(default_factory=set)


class CodeServerRunLauncher(DefaultRunLauncher):
    def __init__(self, inst_data: ConfigurableClassData | None = None) -> None:
        super().__init__(inst_data=inst_data)
        self._servers: dict[str, _Sighting] = {}

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        client = self._get_grpc_client_for_termination(run.run_id)
        if client is None:
            return CheckRunHealthResult(WorkerStatus.UNKNOWN, "the run records no code server")
        where = f"{client.host}:{client.port or client.socket}"
        try:
            reply = client.can_cancel_execution(
                CanCancelExecutionRequest(run_id=run.run_id), timeout=HEALTH_TIMEOUT_S
            )
            if deserialize_value(reply, CanCancelExecutionResult).can_cancel:
                return CheckRunHealthResult(WorkerStatus.RUNNING)
            server_id = client.get_server_id(timeout=HEALTH_TIMEOUT_S)
        except Exception as exc:  # down or restarting: a retry now would be lost
            return CheckRunHealthResult(
                WorkerStatus.RUNNING, f"code server {where} not answering: {type(exc).__name__}"
            )
        gone = f"code server {where} is not executing this run (it was restarted)"
        seen = self._sighting(where, server_id)
        if time.monotonic() - seen.since >= WORKSPACE_REFRESH_S:
            return CheckRunHealthResult(WorkerStatus.FAILED, gone)
        if run.run_id not in seen.told:  # one line in the run's log, so the wait shows in the UI
            seen.told.add(run.run_id)
            message = f"{gone}; {RETRY_WAIT}, within {WORKSPACE_REFRESH_S:.0f} s"
            self._instance.report_engine_event(message, run, EngineEventData(), cls=self.__class__)
        return CheckRunHealthResult(WorkerStatus.RUNNING, gone)

    def _sighting(self, where: str, server_id: str) -> _Sighting:
        """The server answering at ``where``, first seen now if its id is new."""
        seen = self._servers.get(where)
        if seen is None or seen.server_id != server_id:
            seen = self._servers[where] = _Sighting(server_id, time.monotonic())
        return seen
