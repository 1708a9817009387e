"""The contract every compute adapter (local process, Slurm, NERSC SFAPI) fulfils.

Jobs are identified by a deterministic name (asset + scan key + parameter hash), so a retried or
re-executed step reattaches to its job instead of submitting a duplicate.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from cosmic_dagster.errors import CosmicError

#: Slurm terminal states (the strings sfapi-client's ``JobState`` uses).
SUCCESS_STATES = frozenset({"COMPLETED"})
FAILURE_STATES = frozenset(
    {"FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "PREEMPTED", "NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
)
TERMINAL_STATES = SUCCESS_STATES | FAILURE_STATES


@dataclass(frozen=True)
class JobSpec:
    """A batch job: its unique name, the full script text and the directory it writes into.

    ``runtime_class`` names jobs expected to run about as long as this one (same engine and input
    size); adapters learn its typical run time and poll densely only around the expected end."""

    name: str
    script: str
    workdir: str
    env: dict[str, str] = field(default_factory=dict)
    runtime_class: str = ""


@dataclass(frozen=True)
class JobOutcome:
    """A job that reached a terminal state, with timings (epoch seconds) for the UI."""

    job_id: str
    state: str
    submitted_at: float | None = None
    started_at: float | None = None
    ended_at: float | None = None
    reattached: bool = False
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.state in SUCCESS_STATES

    @property
    def queue_wait_s(self) -> float | None:
        if self.submitted_at is None or self.started_at is None:
            return None
        return max(0.0, self.started_at - self.submitted_at)

    @property
    def run_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)


class ComputeUnavailable(CosmicError, RuntimeError):
    """The compute system cannot take jobs now (machine down, auth failed); nothing was submitted."""


class Compute(Protocol):
    """Submit-or-reattach, wait, fetch results, cancel."""

    def run_batch(
        self,
        specs: Sequence[JobSpec],
        on_submitted: Callable[[JobSpec, str, bool], None] | None = None,
    ) -> dict[str, JobOutcome]:
        """Run several jobs at once and wait for all of them, polling their states together.

        For each spec: reattach to a live or completed job named ``spec.name``, or submit one
        (a job of that name that *failed* is superseded by a new submission).
        ``on_submitted(spec, job_id, reattached)`` is called as soon as an id is known.
        Returns outcomes keyed by ``spec.name``; a failed job is an outcome, not an exception.
        Raises :class:`ComputeUnavailable` when nothing can be submitted at all."""
        ...

    def check_available(self) -> None:
        """Raise :class:`ComputeUnavailable` if the system cannot take jobs now (nothing submitted)."""
        ...

    def fetch(self, path: str) -> bytes:
        """Read a small result file (summary, preview) written by the job."""
        ...

    def cancel(self, job_id: str) -> None:
        """Cancel a job (used when the Dagster run is terminated)."""
        ...
