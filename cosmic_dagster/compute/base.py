"""Submit-or-reattach-and-wait, written once for every scheduler.

Subclasses only translate to one scheduler (a local process table, ``sbatch``/``squeue``, or
SFAPI); the idempotency rules live here:

* the job id goes into the :class:`~cosmic_dagster.domain.ledger.Ledger` the moment it exists;
* before submitting, the ledger and then the scheduler (by job name) are asked for the jobs of a
  whole batch at once (one state query, one name query); a live or completed job is reattached,
  a failed one is superseded by one new submission;
* a submission that may have been accepted without its job id coming back
  (:class:`SubmissionUnconfirmed`) is never repeated blindly: the job is looked for by name during
  the not-found grace period, and submitted again only if it did not appear;
* a job not yet visible right after submission (SFAPI's "Job not found") is waited for during a
  grace period instead of being declared lost;
* the states of all jobs of a batch are fetched in one query per poll, and the polls are dense
  around each job's expected end (from the typical run time of its kind) and sparse elsewhere.
"""

from __future__ import annotations

import logging
import statistics
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cosmic_dagster.compute.protocol import (
    FAILURE_STATES,
    TERMINAL_STATES,
    ComputeUnavailable,
    JobOutcome,
    JobSpec,
)
from cosmic_dagster.domain.ledger import Ledger

log = logging.getLogger(__name__)

LEDGER_KIND = "job"
#: Ledger kind of the recent run times per ``JobSpec.runtime_class``.
RUNTIME_KIND = "job_runtime"
#: How many recent run times of a class are kept (their median is the expected run time).
RUNTIME_HISTORY = 20
#: Half-width of the dense polling window around an expected end: three median absolute deviations
#: of the recent run times, at least this fraction of the run time (and 3 poll intervals), at most
#: what keeps the polls of a long job below those of the plain backoff (see ``expected_run``).
MIN_WINDOW_FRACTION = 0.02
#: Submissions whose acceptance stayed unknown, before giving up.
MAX_UNCONFIRMED_SUBMISSIONS = 3


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


class SubmissionUnconfirmed(RuntimeError):
    """The scheduler may have accepted the job but its id never came back (an answer lost after the
    request went out); repeating the submission blindly could start a twin."""


@dataclass
class _Pending:
    spec: JobSpec
    job_id: str
    submitted_at: float
    reattached: bool
    started_at: float | None = None


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
        sparse_poll_interval_s: float | None = None,
    ):
        self.ledger = ledger
        self.poll_interval_s = poll_interval_s
        self.max_poll_interval_s = max_poll_interval_s
        self.not_found_grace_s = not_found_grace_s
        self.timeout_s = timeout_s
        # Far from every expected end a job is only watched for early failures.
        self.sparse_poll_interval_s = sparse_poll_interval_s or 2 * max_poll_interval_s

    # --- what a scheduler adapter provides -------------------------------------------------
    @abstractmethod
    def submit(self, spec: JobSpec) -> str:
        """Submit ``spec`` and return the job id (raise ComputeUnavailable if impossible,
        :class:`SubmissionUnconfirmed` if it may have been accepted without an id coming back)."""

    @abstractmethod
    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        """States of the given jobs in one query; ids the scheduler does not know are left out."""

    @abstractmethod
    def find_by_name(self, name: str) -> JobStatus | None:
        """The newest job called ``name`` the scheduler still knows, if any."""

    def find_by_names(self, names: Sequence[str]) -> dict[str, JobStatus]:
        """:meth:`find_by_name` for several names; adapters that pay per query do it in one."""
        found = {name: self.find_by_name(name) for name in names}
        return {name: status for name, status in found.items() if status is not None}

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

    def prepare(self, specs: Sequence[JobSpec]) -> None:  # noqa: B027 - optional hook
        """Get ready to submit ``specs`` (e.g. create their directories), all in one go."""

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    # --- the shared logic ------------------------------------------------------------------
    def run_batch(
        self,
        specs: Sequence[JobSpec],
        on_submitted: Callable[[JobSpec, str, bool], None] | None = None,
    ) -> dict[str, JobOutcome]:
        self.check_available()
        existing, superseded = self._existing(specs)
        new = [spec for spec in specs if spec.name not in existing]
        if new:
            self.prepare(new)
        pending: dict[str, _Pending] = {}
        for spec in specs:
            if spec.name in existing:
                job_id, submitted_at = existing[spec.name]
                pending[spec.name] = _Pending(spec, job_id, submitted_at, True)
            else:
                job_id, submitted_at = self._submit(spec, superseded.get(spec.name, set()))
                pending[spec.name] = _Pending(spec, job_id, submitted_at, False)
            if on_submitted is not None:
                on_submitted(spec, job_id, pending[spec.name].reattached)
        return self._wait(pending)

    def _existing(self, specs: Sequence[JobSpec]) -> tuple[dict[str, tuple[str, float]], dict[str, set[str]]]:
        """Live or completed jobs of these names (ledger first, then by name), in one state query
        and one name query for the whole batch; and the failed job ids each new job supersedes."""
        records = {spec.name: self.ledger.get(LEDGER_KIND, spec.name) for spec in specs}
        ids = [record["job_id"] for record in records.values() if record]
        seen = self.statuses(ids) if ids else {}
        now = time.time()
        existing: dict[str, tuple[str, float]] = {}
        superseded: dict[str, set[str]] = {}
        for name, record in records.items():
            if record is None:
                continue
            status = seen.get(record["job_id"])
            young = now - record["submitted_at"] < self.not_found_grace_s
            if (status is None and young) or (status is not None and status.state not in FAILURE_STATES):
                existing[name] = (record["job_id"], record["submitted_at"])
            else:
                superseded[name] = {record["job_id"]}
        unresolved = [spec.name for spec in specs if spec.name not in existing]
        for name, found in (self.find_by_names(unresolved) if unresolved else {}).items():
            if found.state in FAILURE_STATES:
                superseded.setdefault(name, set()).add(found.job_id)
                continue
            record = records[name]
            submitted_at = record["submitted_at"] if record else now
            self.ledger.put(LEDGER_KIND, name, {"job_id": found.job_id, "submitted_at": submitted_at})
            existing[name] = (found.job_id, submitted_at)
        return existing, superseded

    def _submit(self, spec: JobSpec, superseded: set[str]) -> tuple[str, float]:
        """Submit once; when acceptance is unknown, find the job by name before submitting again."""
        attempt = 0
        job_id: str | None = None
        while job_id is None:
            attempt += 1
            submitted_at = time.time()
            try:
                job_id = self.submit(spec)
            except SubmissionUnconfirmed as exc:
                log.warning("%s; looking for job %s by name before submitting again", exc, spec.name)
                job_id = self._await_by_name(spec.name, superseded)
                if job_id is None and attempt >= MAX_UNCONFIRMED_SUBMISSIONS:
                    raise ComputeUnavailable(
                        f"{exc}; no job named {spec.name} appeared within "
                        f"{self.not_found_grace_s:.0f} s after each of {attempt} submissions"
                    ) from None
        self.ledger.put(LEDGER_KIND, spec.name, {"job_id": job_id, "submitted_at": submitted_at})
        return job_id, submitted_at

    def _await_by_name(self, name: str, superseded: set[str]) -> str | None:
        """The id of a job called ``name`` (other than ``superseded`` ones) once it becomes visible."""
        deadline = time.time() + self.not_found_grace_s
        while True:
            found = self.find_by_names([name]).get(name)
            if found is not None and found.job_id not in superseded:
                return found.job_id
            remaining = deadline - time.time()
            if remaining <= 0:
                return None
            self.sleep(min(self.poll_interval_s, remaining))

    def _wait(self, pending: dict[str, _Pending]) -> dict[str, JobOutcome]:
        outcomes: dict[str, JobOutcome] = {}
        started = time.time()
        backoff = self.poll_interval_s
        expected = {name: self.expected_run(job.spec) for name, job in pending.items()}
        while pending:
            seen = self.statuses([job.job_id for job in pending.values()])
            now = time.time()
            for name, job in list(pending.items()):
                status = seen.get(job.job_id)
                if status is not None and status.started_at is not None:
                    job.started_at = status.started_at
                if status is None and now - job.submitted_at > self.not_found_grace_s:
                    status = JobStatus(job.job_id, "LOST")
                if status is None or not (status.terminal or status.state == "LOST"):
                    continue
                outcomes[name] = self._outcome(job, status)
                del pending[name]
            if not pending:
                break
            if self.timeout_s is not None and now - started > self.timeout_s:
                raise TimeoutError(f"jobs still running after {self.timeout_s:.0f} s: {sorted(pending)}")
            self.sleep(self.next_poll_s(pending, expected, backoff, now))
            backoff = min(self.max_poll_interval_s, backoff * 1.5)
        return outcomes

    def next_poll_s(
        self,
        pending: dict[str, _Pending],
        expected: dict[str, tuple[float, float] | None],
        backoff: float,
        now: float,
    ) -> float:
        """Seconds to the next poll: every ``poll_interval_s`` inside a job's window around its
        expected end, sparse before it, the usual backoff for jobs without an expectation."""
        waits = []
        for name, job in pending.items():
            expectation = expected[name]
            if expectation is None or job.started_at is None:
                waits.append(backoff)
                continue
            end = job.started_at + expectation[0]
            window = expectation[1]
            if now < end - window:
                waits.append(min(self.sparse_poll_interval_s, end - window - now))
            elif now <= end + window:
                waits.append(self.poll_interval_s)
            else:
                waits.append(backoff)  # overdue: the expectation no longer says anything
        return max(0.0, min(waits))

    def _outcome(self, job: _Pending, status: JobStatus) -> JobOutcome:
        tail = "" if status.state == "COMPLETED" else self._safe_tail(job.job_id, job.spec)
        outcome = JobOutcome(
            job_id=job.job_id,
            state=status.state,
            submitted_at=job.submitted_at,
            started_at=status.started_at,
            ended_at=status.ended_at,
            reattached=job.reattached,
            log_tail=tail,
        )
        if outcome.ok and outcome.run_s is not None:
            self.record_run_s(job.spec.runtime_class, outcome.run_s)
        return outcome

    # --- typical run times -------------------------------------------------------------------
    def record_run_s(self, runtime_class: str, run_s: float) -> None:
        """Remember the run time of a completed job of ``runtime_class`` ("" = not tracked)."""
        if not runtime_class:
            return
        recent = (self.ledger.get(RUNTIME_KIND, runtime_class) or {}).get("run_s", [])
        self.ledger.put(RUNTIME_KIND, runtime_class, {"run_s": [*recent, run_s][-RUNTIME_HISTORY:]})

    def expected_run(self, spec: JobSpec) -> tuple[float, float] | None:
        """(median run time, half-width of the window its end falls in) of recent completed jobs of
        the same kind, if any."""
        if not spec.runtime_class:
            return None
        recent = (self.ledger.get(RUNTIME_KIND, spec.runtime_class) or {}).get("run_s", [])
        if not recent:
            return None
        run_s = statistics.median(recent)
        spread = 3 * statistics.median(abs(x - run_s) for x in recent)
        low = max(3 * self.poll_interval_s, MIN_WINDOW_FRACTION * run_s)
        # Polls per second of run time: 2f/dense + (1 - f)/sparse with a window of f * run_s,
        # against 1/max for the backoff; the largest f that costs no more:
        dense, sparse = self.poll_interval_s, self.sparse_poll_interval_s
        budget = max(0.0, 1 / self.max_poll_interval_s - 1 / sparse) / (2 / dense - 1 / sparse)
        return run_s, min(max(spread, low), max(low, budget * run_s))

    def _safe_tail(self, job_id: str, spec: JobSpec) -> str:
        try:
            return self.log_tail(job_id, spec)
        except Exception as exc:  # the failure itself matters more than its log
            return f"(job output unavailable: {exc})"
