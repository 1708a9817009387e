"""``CodeServerRunLauncher``: Dagster's default launcher plus a run worker health check.

Runs execute in a subprocess of the gRPC code server. If one dies, the code server notices and
fails the run; but if the code server itself dies (container restart, OOM, SIGKILL) nobody is
left to notice, and its runs would stay STARTED forever while their scans wait. This launcher
lets run monitoring ask the code server that started a run whether it still executes it:

* the code server answers "not running it" (it was restarted) -> FAILED: run monitoring fails the
  run and ``run_retries`` re-executes it; the step reattaches to its Globus task and Slurm jobs;
* the code server does not answer -> UNKNOWN: nothing is failed while it is merely down;
* the code server runs it -> RUNNING.

Use it with ``dagster api grpc`` as the code server, not ``dagster code-server start``: that
proxy answers for its newest child server only, so after a code reload runs still executing in
the previous one would wrongly look dead.

Dagster internals used (1.13.27): ``DefaultRunLauncher._get_grpc_client_for_termination`` (the
gRPC client of the server a run was started on, from the run's tags) and the gRPC request types.
"""

from __future__ import annotations

from dagster._core.launcher import CheckRunHealthResult, DefaultRunLauncher, WorkerStatus
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import CanCancelExecutionRequest, CanCancelExecutionResult
from dagster._serdes import deserialize_value

HEALTH_TIMEOUT_S = 10


class CodeServerRunLauncher(DefaultRunLauncher):
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
        except Exception as exc:  # unreachable or restarting: do not fail runs for that
            return CheckRunHealthResult(
                WorkerStatus.UNKNOWN, f"code server {where} not answering: {type(exc).__name__}"
            )
        if deserialize_value(reply, CanCancelExecutionResult).can_cancel:
            return CheckRunHealthResult(WorkerStatus.RUNNING)
        return CheckRunHealthResult(
            WorkerStatus.FAILED, f"code server {where} is not executing this run (it was restarted)"
        )
