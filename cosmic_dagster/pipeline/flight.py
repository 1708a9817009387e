"""Flight checks: every external dependency exercised the way a scan uses it, on a schedule.

Steps, each timed and reported on its own (a failure names its step):

* ``collections``: each collection the Transfer adapter knows (the endpoints file's, in the
  ``nersc`` profile) answers a listing of its root;
* ``canary_copy``: a tiny file with fresh random content, written at the beamline, copied to
  NERSC through the active Transfer adapter and verified against its sha256 (a fresh key each
  time, so it is really copied, never "already there");
* ``compute_status``: the compute machine takes jobs now (NERSC's status of Perlmutter, sinfo);
* ``trivial_job`` (on request): a job that only echoes, submitted and waited for.

A step whose dependency failed is skipped rather than run into the same outage again.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from cosmic_dagster.compute.jobscript import Resources, SlurmDirectives
from cosmic_dagster.compute.protocol import Compute, JobSpec
from cosmic_dagster.files import write_atomic
from cosmic_dagster.transfer.protocol import Transfer, TransferItem

COLLECTIONS = "collections"
CANARY_COPY = "canary_copy"
COMPUTE_STATUS = "compute_status"
TRIVIAL_JOB = "trivial_job"
STEPS = (COLLECTIONS, CANARY_COPY, COMPUTE_STATUS, TRIVIAL_JOB)

#: Where the canary lives under the beamline root (a name no scan pattern matches).
CANARY_RELPATH = ".cosmic-flight/canary.bin"
CANARY_BYTES = 4096
CANARY_LABEL = "cosmic flight check"  # its Globus tasks' label, then the check's time stamp


# An echo: one core for a minute, on a CPU node.
TRIVIAL_JOB_NEEDS = Resources(cpus=1, gpus=0, time_limit="00:01:00")


class FlightStepError(RuntimeError):
    """A step ran and found its dependency broken (the message says how)."""


@dataclass(frozen=True)
class StepResult:
    step: str
    status: str  # passed | failed | skipped
    detail: str
    seconds: float
    links: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class FlightReport:
    steps: list[StepResult]

    @property
    def failed(self) -> list[StepResult]:
        return [s for s in self.steps if s.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def failure_text(self) -> str:
        """One line per failed step: ``flight check step <name> failed: <why>``."""
        return "\n".join(f"flight check step {s.step} failed: {s.detail}" for s in self.failed)


class FlightCheck:
    """The checks over the profile's own adapters (nothing here knows which profile it is)."""

    def __init__(
        self,
        *,
        transfer: Transfer,
        compute: Compute,
        beamline_root: str | Path | None,
        recon_root: str,
        slurm: SlurmDirectives | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.transfer = transfer
        self.compute = compute
        self.beamline_root = Path(beamline_root) if beamline_root is not None else None
        self.recon_root = recon_root.rstrip("/")
        self.slurm = slurm
        self.clock = clock

    def run(self, *, trivial_job: bool = False) -> FlightReport:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime(self.clock())) + f"-{os.getpid()}"
        steps = [self._step(COLLECTIONS, self._collections)]
        if steps[0].status == "failed":
            steps.append(StepResult(CANARY_COPY, "skipped", "collections unreachable", 0.0))
        elif self.beamline_root is None:
            why = "this agent has no beamline folder to write the canary into (arrivals by listing)"
            steps.append(StepResult(CANARY_COPY, "skipped", why, 0.0))
        else:
            steps.append(self._step(CANARY_COPY, lambda: self._canary(stamp)))
        steps.append(self._step(COMPUTE_STATUS, self._compute_status))
        if not trivial_job:
            steps.append(StepResult(TRIVIAL_JOB, "skipped", "not requested", 0.0))
        elif steps[-1].status == "failed":
            steps.append(StepResult(TRIVIAL_JOB, "skipped", "compute machine unavailable", 0.0))
        else:
            steps.append(self._step(TRIVIAL_JOB, lambda: self._trivial_job(stamp)))
        return FlightReport(steps)

    @staticmethod
    def _step(name: str, fn: Callable[[], tuple[str, dict[str, str]]]) -> StepResult:
        started = time.monotonic()
        try:
            detail, links = fn()
        except Exception as exc:  # any error of a dependency is that step's finding
            detail = str(exc) or type(exc).__name__
            return StepResult(name, "failed", detail, round(time.monotonic() - started, 3))
        return StepResult(name, "passed", detail, round(time.monotonic() - started, 3), links)

    def _collections(self) -> tuple[str, dict[str, str]]:
        return self.transfer.check_reachable(), {}

    def _canary(self, stamp: str) -> tuple[str, dict[str, str]]:
        assert self.beamline_root is not None  # run() skips the step without one
        path = self.beamline_root / CANARY_RELPATH
        data = os.urandom(CANARY_BYTES)
        write_atomic(path, data, unique=True)
        sha256 = hashlib.sha256(data).hexdigest()
        item = TransferItem(
            key=f"flight-canary-{stamp}", relpath=CANARY_RELPATH, size=len(data), sha256=sha256
        )
        report = self.transfer.copy_batch([item], label=f"{CANARY_LABEL} {stamp}")
        outcome = report.outcomes[item.key]
        links = {"globus_task": report.task_url} if report.task_url else {}
        if not outcome.ok:
            raise FlightStepError(f"canary copy not verified: {outcome.error or 'no verification'}")
        if outcome.checksum_algorithm == "sha256" and outcome.checksum != sha256:
            raise FlightStepError("canary sha256 at NERSC differs from the one written")
        if outcome.already_present:
            raise FlightStepError("canary reported as already present: nothing was copied")
        return f"{len(data)} bytes copied and checksum-verified to {outcome.destination}", links

    def _compute_status(self) -> tuple[str, dict[str, str]]:
        self.compute.check_available()
        return "takes jobs", {}

    def _trivial_job(self, stamp: str) -> tuple[str, dict[str, str]]:
        name = f"cosmic-flight.{stamp}"
        workdir = f"{self.recon_root}/_flight/{stamp}"
        lines = ["#!/bin/bash"]
        if self.slurm is not None:
            lines += self.slurm.lines(job_name=name, workdir=workdir, needs=TRIVIAL_JOB_NEEDS)
        lines += ["set -eu", 'echo "cosmic flight check on $(hostname)"']
        spec = JobSpec(name=name, script="\n".join(lines) + "\n", workdir=workdir)
        outcome = self.compute.run_batch([spec])[name]
        if not outcome.ok:
            raise FlightStepError(f"job {outcome.job_id} ended {outcome.state}: {outcome.log_tail.strip()}")
        return f"job {outcome.job_id} {outcome.state}", {}
