"""The simulated scheduler behind the SFAPI emulator (real processes), and the scheduler interface
that it and the real local Slurm (:mod:`.local_slurm`) share.

Both report jobs as :class:`JobRecord`; the server turns records into squeue/sacct rows the way
NERSC's API does (finished jobs leave squeue and are only known to sacct).

The simulated scheduler really runs each job script as a local process (so results such as
summary.json exist afterwards) with a configurable queue wait and minimum run time. A
:class:`JobFault` makes a job end in a chosen state instead (its script is killed), with the line
slurmstepd would have written into the job's output.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol
from zoneinfo import ZoneInfo

from cosmic_dagster.emulators.sfapi.sbatch import ScriptError, directives

#: Slurm job states after which a job never runs again.
TERMINAL = frozenset(
    {"COMPLETED", "FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "PREEMPTED"}
    | {"NODE_FAIL", "BOOT_FAIL", "DEADLINE"}
)
#: States a job fault can force (what NERSC jobs end in besides COMPLETED and script failures).
FAULT_STATES = ("FAILED", "TIMEOUT", "OUT_OF_MEMORY", "CANCELLED", "PREEMPTED", "NODE_FAIL")
NODE = "nid200001"
_TICK_S = 0.05
_SHORT_STATE = {
    "PENDING": "PD",
    "RUNNING": "R",
    "COMPLETED": "CD",
    "FAILED": "F",
    "TIMEOUT": "TO",
    "OUT_OF_MEMORY": "OOM",
    "CANCELLED": "CA",
    "PREEMPTED": "PR",
    "NODE_FAIL": "NF",
}


class SubmitError(Exception):
    """sbatch refused the job; the message is what sbatch printed."""


@dataclass(frozen=True)
class JobFault:
    """End the next matching job in ``state`` ``after_s`` seconds after it started running."""

    state: str
    after_s: float = 0.0
    name_contains: str = ""
    count: int = 1

    def __post_init__(self) -> None:
        if self.state not in FAULT_STATES:
            raise ValueError(f"job fault state {self.state!r}: expected one of {', '.join(FAULT_STATES)}")
        if self.after_s < 0 or self.count < 1:
            raise ValueError("job fault needs after_s >= 0 and count >= 1")


@dataclass
class JobRecord:
    """What the emulator knows about one job (times in epoch seconds)."""

    jobid: str
    name: str
    user: str
    state: str
    submitted: float | None
    started: float | None = None
    ended: float | None = None
    exit_code: str | None = None
    workdir: str = ""
    output: str | None = None
    cancelled_by: int | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Scheduler(Protocol):
    supports_job_faults: bool

    def submit(self, script: str, args: Sequence[str], user: str, fault: JobFault | None) -> str: ...

    def records(self, jobids: Sequence[str] | None) -> list[JobRecord]:
        """The given jobs (unknown ids left out), or all jobs submitted through this emulator."""
        ...

    def cancel(self, jobid: str, uid: int) -> None: ...

    def close(self) -> None: ...


# --- rows as NERSC's squeue/sacct endpoints return them ---------------------------------------
def _clock(epoch: float | None, tz: ZoneInfo, missing: str) -> str:
    if epoch is None:
        return missing
    return datetime.fromtimestamp(epoch, tz).strftime("%Y-%m-%dT%H:%M:%S")


def _elapsed(record: JobRecord, now: float) -> str:
    if record.started is None:
        return "0:00"
    seconds = int((record.ended or now) - record.started)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def squeue_row(record: JobRecord, tz: ZoneInfo, now: float) -> dict[str, str]:
    return {
        "account": "m0000",
        "jobid": record.jobid,
        "name": record.name,
        "user": record.user,
        "state": record.state,
        "st": _SHORT_STATE.get(record.state, record.state[:2]),
        "partition": "regular",
        "qos": "regular",
        "submit_time": _clock(record.submitted, tz, "N/A"),
        "start_time": _clock(record.started, tz, "N/A"),
        "end_time": _clock(record.ended, tz, "N/A"),
        "time": _elapsed(record, now),
        "reason": "None" if record.started else "Priority",
        "nodelist(reason)": NODE if record.started else "(Priority)",
        "work_dir": record.workdir,
    }


def sacct_row(record: JobRecord, tz: ZoneInfo, now: float) -> dict[str, str]:
    state = record.state
    if state == "CANCELLED" and record.cancelled_by is not None:
        state = f"CANCELLED by {record.cancelled_by}"
    return {
        "jobid": record.jobid,
        "jobidraw": record.jobid,
        "jobname": record.name,
        "user": record.user,
        "account": "m0000",
        "partition": "regular",
        "qos": "regular",
        "state": state,
        "exitcode": record.exit_code or "0:0",
        "submit": _clock(record.submitted, tz, "Unknown"),
        "start": _clock(record.started, tz, "Unknown"),
        "end": _clock(record.ended, tz, "Unknown"),
        "elapsed": _elapsed(record, now),
        "nnodes": "1",
        "nodelist": NODE if record.started else "None assigned",
        "workdir": record.workdir,
    }


# --- the simulated scheduler -------------------------------------------------------------------
_FAULT_MESSAGES = {
    "FAILED": "srun: error: {node}: task 0: Exited with exit code 1",
    "TIMEOUT": "slurmstepd: error: *** JOB {jobid} ON {node} CANCELLED AT {at} DUE TO TIME LIMIT ***",
    "OUT_OF_MEMORY": (
        "slurmstepd: error: Detected 1 oom_kill event in StepId={jobid}.batch. "
        "Some of the step tasks have been OOM Killed."
    ),
    "CANCELLED": "slurmstepd: error: *** JOB {jobid} ON {node} CANCELLED AT {at} ***",
    "PREEMPTED": "slurmstepd: error: *** JOB {jobid} ON {node} CANCELLED AT {at} DUE TO PREEMPTION ***",
    "NODE_FAIL": "slurmstepd: error: *** JOB {jobid} ON {node} CANCELLED AT {at} DUE TO NODE FAILURE ***",
}
_FAULT_EXIT_CODES = {
    "FAILED": "1:0",
    "TIMEOUT": "0:15",
    "OUT_OF_MEMORY": "0:125",
    "CANCELLED": "0:15",
    "PREEMPTED": "0:15",
    "NODE_FAIL": "0:0",
}


def parse_time_limit(value: str) -> float:
    """Slurm ``--time`` forms: M, M:S, H:M:S, D-H, D-H:M, D-H:M:S -> seconds."""
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", value.strip())
    if not match:
        raise SubmitError(f"sbatch: error: Invalid --time specification {value!r}")
    days, first, second, third = match.groups()
    if days is not None:
        hours, minutes, seconds = int(first), int(second or 0), int(third or 0)
    elif third is not None:
        hours, minutes, seconds = int(first), int(second), int(third)
    else:
        hours, minutes, seconds = 0, int(first), int(second or 0)
    return ((int(days or 0) * 24 + hours) * 60 + minutes) * 60 + seconds


@dataclass
class _SimJob:
    record: JobRecord
    script_path: Path
    args: list[str]
    error: str | None
    time_limit_s: float | None
    fault: JobFault | None
    process: subprocess.Popen[bytes] | None = None
    exited_at: float | None = None
    env: dict[str, str] = field(default_factory=dict)


class SimulatedScheduler:
    """PENDING for ``queue_wait_s``, then RUNNING while the script runs (at least ``min_run_s``)."""

    supports_job_faults = True

    def __init__(
        self,
        *,
        queue_wait_s: float = 0.5,
        min_run_s: float = 0.0,
        spool_dir: str | Path | None = None,
        first_job_id: int = 1001,
    ):
        self.queue_wait_s = queue_wait_s
        self.min_run_s = min_run_s
        self.spool_dir = Path(spool_dir or tempfile.mkdtemp(prefix="sfapi-emulator-spool-"))
        self.spool_dir.mkdir(parents=True, exist_ok=True)
        self._next_id = first_job_id
        self._jobs: dict[str, _SimJob] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker = threading.Thread(target=self._tick, name="sfapi-sim-scheduler", daemon=True)
        self._ticker.start()

    def submit(self, script: str, args: Sequence[str], user: str, fault: JobFault | None) -> str:
        try:
            options = directives(script)
        except ScriptError as exc:
            raise SubmitError(str(exc)) from None
        time_limit = parse_time_limit(options["time"]) if options.get("time") else None
        with self._lock:
            jobid = str(self._next_id)
            self._next_id += 1
            name = options.get("job-name") or "sbatch"
            workdir = options.get("chdir") or str(self.spool_dir)
            script_path = self.spool_dir / f"job{jobid}.sh"
            script_path.write_text(script)
            script_path.chmod(0o700)
            record = JobRecord(
                jobid=jobid,
                name=name,
                user=user,
                state="PENDING",
                submitted=time.time(),
                workdir=workdir,
                output=self._expand(options.get("output") or "slurm-%j.out", jobid, name, user, workdir),
            )
            error = options.get("error")
            self._jobs[jobid] = _SimJob(
                record=record,
                script_path=script_path,
                args=list(args),
                error=self._expand(error, jobid, name, user, workdir) if error else None,
                time_limit_s=time_limit,
                fault=fault,
                env={
                    "SLURM_JOB_ID": jobid,
                    "SLURM_JOBID": jobid,
                    "SLURM_JOB_NAME": name,
                    "SLURM_JOB_USER": user,
                    "SLURM_SUBMIT_DIR": workdir,
                },
            )
        return jobid

    @staticmethod
    def _expand(pattern: str, jobid: str, name: str, user: str, workdir: str) -> str:
        path = pattern.replace("%j", jobid).replace("%x", name).replace("%u", user)
        return path if os.path.isabs(path) else os.path.join(workdir, path)

    def records(self, jobids: Sequence[str] | None) -> list[JobRecord]:
        with self._lock:
            self._advance_all(time.time())
            jobs = (
                self._jobs.values() if jobids is None else [self._jobs[j] for j in jobids if j in self._jobs]
            )
            return [JobRecord(**job.record.as_dict()) for job in jobs]

    def cancel(self, jobid: str, uid: int) -> None:
        with self._lock:
            job = self._jobs.get(jobid)
            if job is None:
                raise SubmitError(
                    f"scancel: error: Kill job error on job id {jobid}: Invalid job id specified"
                )
            self._advance(job, time.time())
            if job.record.terminal:
                raise SubmitError(
                    f"scancel: error: Kill job error on job id {jobid}: "
                    "Job/step already completing or completed"
                )
            self._end(job, "CANCELLED", time.time(), "0:15")
            job.record.cancelled_by = uid

    def close(self) -> None:
        self._stop.set()
        self._ticker.join(timeout=5)
        with self._lock:
            for job in self._jobs.values():
                self._kill(job)

    # --- state machine (always under self._lock) ----------------------------------------------
    def _tick(self) -> None:
        while not self._stop.wait(_TICK_S):
            with self._lock:
                self._advance_all(time.time())

    def _advance_all(self, now: float) -> None:
        for job in self._jobs.values():
            if not job.record.terminal:
                self._advance(job, now)

    def _advance(self, job: _SimJob, now: float) -> None:
        record = job.record
        if record.state == "PENDING" and record.submitted is not None:
            if now >= record.submitted + self.queue_wait_s:
                self._start(job, now)
            return
        if record.state != "RUNNING" or record.started is None:
            return
        if job.fault is not None and now >= record.started + job.fault.after_s:
            self._end(job, job.fault.state, now, _FAULT_EXIT_CODES[job.fault.state])
            return
        if job.time_limit_s is not None and now >= record.started + job.time_limit_s:
            self._end(job, "TIMEOUT", now, _FAULT_EXIT_CODES["TIMEOUT"])
            return
        if job.process is None:
            return
        code = job.process.poll()
        if code is None:
            return
        job.exited_at = job.exited_at or now
        end = max(job.exited_at, record.started + self.min_run_s)
        if now >= end:
            record.state = "COMPLETED" if code == 0 else "FAILED"
            record.exit_code = f"{code}:0" if code >= 0 else f"0:{-code}"
            record.ended = end

    def _start(self, job: _SimJob, now: float) -> None:
        record = job.record
        record.started = now
        try:
            out = open(record.output or os.devnull, "wb")  # noqa: SIM115 - handed to the child
            err = open(job.error, "wb") if job.error else None  # noqa: SIM115
        except OSError:
            # Like slurmstepd: no output file, no job (the directory must exist beforehand).
            record.state, record.ended, record.exit_code = "FAILED", now, "0:53"
            return
        try:
            job.process = subprocess.Popen(
                [str(job.script_path), *job.args],
                cwd=record.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err or subprocess.STDOUT,
                env={**os.environ, **job.env},
                start_new_session=True,
            )
            record.state = "RUNNING"
        except OSError as exc:
            out.write(f"slurmstepd: error: execve(): {exc.strerror}\n".encode())
            record.state, record.ended, record.exit_code = "FAILED", now, "0:2"
        finally:
            out.close()
            if err is not None:
                err.close()

    def _kill(self, job: _SimJob) -> None:
        if job.process is not None and job.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(job.process.pid, signal.SIGKILL)
            job.process.wait(timeout=10)

    def _end(self, job: _SimJob, state: str, now: float, exit_code: str) -> None:
        self._kill(job)
        record = job.record
        if record.started is not None and record.output:
            at = datetime.fromtimestamp(now).strftime("%Y-%m-%dT%H:%M:%S")
            message = _FAULT_MESSAGES[state].format(jobid=record.jobid, node=NODE, at=at)
            try:
                with open(job.error or record.output, "a") as log:
                    log.write(message + "\n")
            except OSError:
                pass
        record.state, record.ended, record.exit_code = state, now, exit_code
