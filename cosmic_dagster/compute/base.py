"""Submit-or-reattach-and-wait, written once for every scheduler.

Subclasses only translate to one scheduler (a local process table, ``sbatch``/``squeue``, or
SFAPI); the idempotency rules live here:

* the job id goes into the :class:`~cosmic_dagster.domain.ledger.Ledger` the moment it exists;
* before submitting, the ledger and then the scheduler (by job name) are asked for the job;
  a live or completed one is reattached, a failed one is superseded by one new submission;
* a job not yet visible right after submission (SFAPI's "Job not found") is waited for during a
  grace period instead of being declared lost;
* the states of all jobs of a batch are fetched in one query per poll.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cosmic_dagster.compute.protocol import (
    FAILURE_STATES,
    TERMINAL_STATES,
    JobOutcome,
    JobSpec,
)
from cosmic_dagster.domain.ledger import Ledger

LEDGER_KIND = "job"


@dataclass(frozen=True)
class JobStatus:
    """One observation of a job by the scheduler (times in epoch seconds when known)."""

    job_id: str
    state: str
    started_at: float | None = None
    ended_at: float | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES


class SchedulerCompute(ABC):
    """Base of every :class:`~cosmic_dagster.compute.protocol.Compute` adapter."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        poll_interval_s: float = 2.0,
        max_poll_interval_s: float = 30.0,
        not_found_grace_s: float = 60.0,
        timeout_s: float | None = None,
    ):
        self.ledger = ledger
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        self.not_found_grace_s = not_found_grace_s
        self.timeout_s = timeout_s

    # --- what a scheduler adapter provides -------------------------------------------------
    @abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Submit ``spec`` and return the job id (raise ComputeUnavailable if impossible)."""

    @abstractmethod
    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of the given jobs in one query; ids the scheduler does not know are left out."""

    @abstractmethod
    def find_by_name(self, name: str) -> JobStatus | None:
        """The newest job called ``name`` the scheduler still knows, if any."""

    @abstractmethod
    def log_tail(self, job_id: str, spec: JobSpec, lines: int = 40) -> str:
        """The last lines of the job's output (for failure messages)."""

    @abstractmethod
    def fetch(self, path: str) -> bytes:
        """Read a small file the job wrote."""

    @abstractmethod
    def cancel(self, job_id: str) -> None:
        """Cancel a job."""

    def check_available(self) -> None:  # noqa: B027 - optional hook, most schedulers need none
        """Raise ComputeUnavailable before any submission if the system cannot take jobs."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # --- the shared logic ------------------------------------------------------------------
    def run_batch(
        self,
        specs: Sequence[JobSpec],
        on_submitted: Callable[[JobSpec, str, bool], None] | None = None,
    ) -> dict[str, JobOutcome]:
        self.check_available()
        pending: dict[str, tuple[JobSpec, str, float, bool]] = {}
        for spec in specs:
            job_id, submitted_at, reattached = self._submit_or_reattach(spec)
            pending[spec.name] = (spec, job_id, submitted_at, reattached)
            if on_submitted is not None:
                on_submitted(spec, job_id, reattached)
        return self._wait(pending)

    def _submit_or_reattach(self, spec: JobSpec) -> tuple[str, float, bool]:
        existing = self._existing(spec)
        if existing is not None:
            return existing[0], existing[1], True
        job_id = self.submit(spec)
        submitted_at = time.time()
        self.ledger.put(LEDGER_KIND, spec.name, {"job_id": job_id, "submitted_at": submitted_at})
        return job_id, submitted_at, False

    def _existing(self, spec: JobSpec) -> tuple[str, float] | None:
        """A job of this name that is live or completed, by ledger first, then by name."""
        record = self.ledger.get(LEDGER_KIND, spec.name)
        if record is not None:
            status = self.statuses([record["job_id"]]).get(record["job_id"])
            if status is None and time.time() - record["submitted_at"] < self.not_found_grace_s:
                return record["job_id"], record["submitted_at"]
            if status is not None and status.state not in FAILURE_STATES:
                return record["job_id"], record["submitted_at"]
        found = self.find_by_name(spec.name)
        if found is not None and found.state not in FAILURE_STATES:
            submitted_at = record["submitted_at"] if record else time.time()
            self.ledger.put(LEDGER_KIND, spec.name, {"job_id": found.job_id, "submitted_at": submitted_at})
            return found.job_id, submitted_at
        return None

    def _wait(self, pending: dict[str, tuple[JobSpec, str, float, bool]]) -> dict[str, JobOutcome]:
        outcomes: dict[str, JobOutcome] = {}
        started = time.time()
        interval = self.poll_interval_s
        while pending:
            ids = [job_id for _, job_id, _, _ in pending.values()]
            seen = self.statuses(ids)
            now = time.time()
            for name, (spec, job_id, submitted_at, reattached) in list(pending.items()):
                status = seen.get(job_id)
                if status is None and now - submitted_at > self.not_found_grace_s:
                    status = JobStatus(job_id, "LOST")
                if status is None or not (status.terminal or status.state == "LOST"):
                    continue
                tail = "" if status.state == "COMPLETED" else self._safe_tail(job_id, spec)
                outcomes[name] = JobOutcome(
                    job_id=job_id,
                    state=status.state,
                    submitted_at=submitted_at,
                    started_at=status.started_at,
                    ended_at=status.ended_at,
                    reattached=reattached,
                    log_tail=tail,
                )
                del pending[name]
            if not pending:
                break
            if self.timeout_s is not None and now - started > self.timeout_s:
                raise TimeoutError(f"jobs still running after {self.timeout_s:.0f} s: {sorted(pending)}")
            self.sleep(interval)
            interval = min(self.max_poll_interval_s, interval * 1.5)
        return outcomes

    def _safe_tail(self, job_id: str, spec: JobSpec) -> str:
        try:
            return self.log_tail(job_id, spec)
        except Exception as exc:  # the failure itself matters more than its log
            return f"(job output unavailable: {exc})"
