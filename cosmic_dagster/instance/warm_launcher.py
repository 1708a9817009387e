"""``WarmRunLauncher``: start each run in a run worker that is already warm.

Dagster's ``DefaultRunLauncher`` asks the code server to spawn a fresh Python process per run,
which then imports dagster and loads the code location: ~2.3 s before the first step, on every
run. This launcher keeps ``spares`` pre-started :mod:`cosmic_dagster.instance.warm_worker` processes per
code location (in the process that launches runs: the daemon with the QueuedRunCoordinator), hands
each new run to one over a pipe, and immediately starts a replacement spare.

* **Cross-process control.** The worker's pid, process start time and host are written to run
  tags *before* the handoff, so ``terminate`` (called by the webserver) and
  ``check_run_worker_health`` (run monitoring, in the daemon) work from any process on the host
  and never signal a recycled pid.
* **Terminate** sends SIGINT, like Dagster's own gRPC termination: the step sees
  ``DagsterExecutionInterruptedError`` and the run ends CANCELED.
* **Health.** A worker that is gone while its run is still STARTED is reported FAILED; run
  monitoring then fails the run and ``run_retries`` re-executes it (the step reattaches to its
  job through the ledger).
* **No stale code.** A spare older than ``max_spare_age_seconds`` is replaced, and a spare whose
  imported code changed on disk runs that run cold (see :mod:`cosmic_dagster.instance.warm_worker`).
* Workers stay in the launching process's process group, as the default launcher's run workers
  stay in their code server's: stopping the daemon's group stops its runs. An idle spare also
  exits when its launcher's process goes away (end of its stdin).

Dagster internals used (1.13.27), all in the import block below: the ``RunLauncher`` base and its
health types, ``ConfigurableClass`` (how dagster.yaml instantiates launchers), ``ExecuteRunArgs``
and serdes (the payload of ``dagster api execute_run``). Linux only for the process identity check
(``/proc``); elsewhere the pid alone is checked.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# --- Dagster internals (see the module docstring) ------------------------------------------------
from dagster import Field, IntSource
from dagster._core.events import EngineEventData
from dagster._core.launcher import CheckRunHealthResult, LaunchRunContext, RunLauncher, WorkerStatus
from dagster._core.origin import RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._grpc.types import ExecuteRunArgs
from dagster._serdes import ConfigurableClass, ConfigurableClassData, serialize_value

from cosmic_dagster import names
from cosmic_dagster.domain.processes import process_start_time

# -------------------------------------------------------------------------------------------------

RECYCLE_CHECK_S = 15.0


@dataclass(frozen=True)
class WorkerRef:
    """Which process runs a run, as recorded in the run's tags."""

    pid: int
    start: str
    host: str

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> WorkerRef | None:
        if names.TAG_WORKER_PID not in tags:
            return None
        return cls(
            int(tags[names.TAG_WORKER_PID]),
            tags.get(names.TAG_WORKER_START, ""),
            tags.get(names.TAG_WORKER_HOST, ""),
        )

    def tags(self) -> dict[str, str]:
        return {
            names.TAG_WORKER_PID: str(self.pid),
            names.TAG_WORKER_START: self.start,
            names.TAG_WORKER_HOST: self.host,
        }

    @property
    def local(self) -> bool:
        return self.host == socket.gethostname()

    def alive(self) -> bool:
        start = process_start_time(self.pid)
        return start is not None and (start == self.start or not self.start or not start)


@dataclass
class Spare:
    proc: subprocess.Popen[bytes]
    started: float = field(default_factory=time.monotonic)

    @property
    def ref(self) -> WorkerRef:
        return WorkerRef(self.proc.pid, process_start_time(self.proc.pid) or "", socket.gethostname())

    def hand(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        self.proc.stdin.close()

    def discard(self) -> None:
        """Stop an idle spare (it holds no run)."""
        if self.proc.stdin is not None and not self.proc.stdin.closed:
            self.proc.stdin.close()
        self.proc.kill()


class SparePool:
    """Idle warm workers per code location, replaced when dead or too old."""

    def __init__(self, per_location: int, max_age_s: float):
        self.per_location = per_location
        self.max_age_s = max_age_s
        self._spares: dict[str, list[Spare]] = {}
        self._origins: dict[str, RepositoryPythonOrigin] = {}
        self._lock = threading.Lock()
        self._recycler: threading.Thread | None = None
        self._closed = threading.Event()

    def take(self, origin: RepositoryPythonOrigin) -> tuple[Spare, bool]:
        """A warm spare for ``origin`` if one is usable, else a freshly started worker."""
        key = serialize_value(origin)
        with self._lock:
            self._origins[key] = origin
            spares = self._spares.setdefault(key, [])
            while spares:
                spare = spares.pop(0)
                if spare.proc.poll() is None and not self._too_old(spare):
                    return spare, True
                spare.discard()
        return self.fresh(origin), False

    def refill(self, origin: RepositoryPythonOrigin) -> None:
        key = serialize_value(origin)
        with self._lock:
            spares = self._spares.setdefault(key, [])
            while len(spares) < self.per_location:
                spares.append(self.fresh(origin))
            if self._recycler is None:
                self._recycler = threading.Thread(
                    target=self._recycle_loop, name="warm-spare-recycler", daemon=True
                )
                self._recycler.start()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            for spares in self._spares.values():
                for spare in spares:
                    spare.discard()
            self._spares.clear()

    def _too_old(self, spare: Spare) -> bool:
        return time.monotonic() - spare.started > self.max_age_s

    def _recycle_loop(self) -> None:
        while not self._closed.wait(RECYCLE_CHECK_S):
            with self._lock:
                for key, spares in self._spares.items():
                    for i, spare in enumerate(spares):
                        if spare.proc.poll() is not None or self._too_old(spare):
                            spare.discard()
                            spares[i] = self.fresh(self._origins[key])

    @staticmethod
    def fresh(origin: RepositoryPythonOrigin) -> Spare:
        """Start a worker for ``origin`` (warm in ~2 s; a run handed to it earlier just waits)."""
        proc = subprocess.Popen(
            [origin.executable_path, "-m", "cosmic_dagster.instance.warm_worker", serialize_value(origin)],
            stdin=subprocess.PIPE,
        )
        threading.Thread(target=proc.wait, name=f"reap-run-worker-{proc.pid}", daemon=True).start()
        return Spare(proc)


class WarmRunLauncher(RunLauncher, ConfigurableClass):
    """Launches each run in a pre-started run worker; see the module docstring."""

    def __init__(
        self,
        spares: int = 1,
        max_spare_age_seconds: int = 600,
        inst_data: ConfigurableClassData | None = None,
    ):
        if spares < 0:
            raise ValueError(f"spares must be >= 0, got {spares}")
        if max_spare_age_seconds <= 0:
            raise ValueError(f"max_spare_age_seconds must be > 0, got {max_spare_age_seconds}")
        self._inst_data = inst_data
        self._pool = SparePool(spares, max_spare_age_seconds)
        super().__init__()

    @property
    def inst_data(self) -> ConfigurableClassData | None:
        return self._inst_data

    @classmethod
    def config_type(cls) -> dict[str, Field]:
        return {
            "spares": Field(
                IntSource,
                is_required=False,
                default_value=1,
                description="idle warm workers per code location",
            ),
            "max_spare_age_seconds": Field(
                IntSource,
                is_required=False,
                default_value=600,
                description="replace an idle spare after this long",
            ),
        }

    @classmethod
    def from_config_value(
        cls, inst_data: ConfigurableClassData, config_value: Mapping[str, Any]
    ) -> WarmRunLauncher:
        return cls(inst_data=inst_data, **config_value)

    def launch_run(self, context: LaunchRunContext) -> None:
        run = context.dagster_run
        if run.job_code_origin is None:
            raise ValueError(f"run {run.run_id} has no code origin: cannot start a run worker for it")
        origin = run.job_code_origin.repository_origin
        args = ExecuteRunArgs(
            job_origin=run.job_code_origin, run_id=run.run_id, instance_ref=self._instance.get_ref()
        )
        spare, warm = self._pool.take(origin)
        ref = spare.ref
        self._instance.add_run_tags(run.run_id, ref.tags())  # before the handoff: terminate needs them
        try:
            spare.hand(serialize_value(args))
        except OSError:  # the spare died between the check and the handoff: start one for this run
            spare.discard()
            spare, warm = self._pool.fresh(origin), False
            ref = spare.ref
            self._instance.add_run_tags(run.run_id, ref.tags())
            spare.hand(serialize_value(args))
        kind = "warm" if warm else "newly started"
        self._instance.report_engine_event(
            f"Run handed to a {kind} run worker (pid {ref.pid}).", run, EngineEventData({"pid": str(ref.pid)})
        )
        self._pool.refill(origin)

    def terminate(self, run_id: str) -> bool:
        run = self._instance.get_run_by_id(run_id)
        if run is None or run.is_finished:
            return False
        self._instance.report_run_canceling(run)
        ref = WorkerRef.from_tags(run.tags)
        if ref is None or not ref.local or not ref.alive():
            self._instance.report_engine_event(
                "No live run worker on this host to send the termination request to.", run, cls=self.__class__
            )
            return False
        os.kill(ref.pid, signal.SIGINT)
        return True

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        ref = WorkerRef.from_tags(run.tags)
        if ref is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "not started by WarmRunLauncher; not checked")
        if not ref.local:
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"run worker on host {ref.host}; not checked")
        if ref.alive():
            return CheckRunHealthResult(WorkerStatus.RUNNING, run_worker_id=str(ref.pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"run worker process {ref.pid} is gone (killed or crashed)",
            run_worker_id=str(ref.pid),
        )

    def get_run_worker_debug_info(
        self, run: DagsterRun, include_container_logs: bool | None = True
    ) -> str | None:
        ref = WorkerRef.from_tags(run.tags)
        if ref is None:
            return None
        state = "alive" if ref.local and ref.alive() else "gone"
        return f"run worker pid {ref.pid} on {ref.host or 'unknown host'}: {state}"

    def dispose(self) -> None:
        self._pool.close()
