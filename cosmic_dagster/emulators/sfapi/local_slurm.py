"""The emulator's real-Slurm backend: its own sbatch/squeue/sacct/scancel calls on this machine.

Written from Slurm's documented command line, independently of the adapters (the emulator plays
NERSC; sharing the adapter's Slurm code would let one bug hide on both sides). Times are asked for
as epoch seconds (``SLURM_TIME_FORMAT=%s``). Finished jobs leave ``squeue`` after ``MinJobAge``;
then ``sacct`` knows them, or ``sacct -c`` (the job-completion file) on a cluster without slurmdbd.
Only jobs submitted through this emulator are ever listed.
"""

from __future__ import annotations

import getpass
import os
import subprocess
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cosmic_dagster.emulators.sfapi.sbatch import ScriptError, directives
from cosmic_dagster.emulators.sfapi.scheduler import TERMINAL, JobFault, JobRecord, SubmitError

COMMAND_TIMEOUT_S = 60
_ACCOUNTING_DISABLED = "accounting storage is disabled"


@dataclass
class _Submitted:
    name: str
    submitted: float
    workdir: str
    output: str


def _slurm(command: list[str], stdin: str | None = None) -> str:
    """Run one Slurm command; its stderr becomes the error, as NERSC passes it through."""
    env = {**os.environ, "SLURM_TIME_FORMAT": "%s"}
    try:
        done = subprocess.run(
            command, input=stdin, capture_output=True, text=True, env=env, timeout=COMMAND_TIMEOUT_S
        )
    except FileNotFoundError:
        raise SubmitError(f"{command[0]}: command not found") from None
    except subprocess.TimeoutExpired:
        raise SubmitError(f"{command[0]}: no answer within {COMMAND_TIMEOUT_S} s") from None
    if done.returncode != 0:
        raise SubmitError(done.stderr.strip() or f"{command[0]} exited with {done.returncode}")
    return done.stdout


def _epoch(text: str) -> float | None:
    text = text.strip()
    return float(text) if text.isdigit() and text != "0" else None


def _state(text: str) -> str:
    """``CANCELLED by 0`` -> ``CANCELLED``; ``FAILED+`` (sacct truncation) -> ``FAILED``."""
    words = text.split()
    return words[0].rstrip("+") if words else "UNKNOWN"


class SlurmScheduler:
    """Jobs on the local Slurm; job faults need the simulated scheduler."""

    supports_job_faults = False

    def __init__(self) -> None:
        self._jobs: dict[str, _Submitted] = {}
        self._lock = threading.Lock()
        self._completion_file: bool | None = None  # learnt from the first sacct call

    def submit(self, script: str, args: Sequence[str], user: str, fault: JobFault | None) -> str:
        if fault is not None:
            raise SubmitError("job faults need the simulated backend")
        if args:
            raise SubmitError("script arguments are not supported for inline scripts on the slurm backend")
        try:
            options = directives(script)
        except ScriptError as exc:
            raise SubmitError(str(exc)) from None
        jobid = _slurm(["sbatch", "--parsable"], stdin=script).strip().split(";")[0]
        if not jobid.isdigit():
            raise SubmitError(f"sbatch printed no job id: {jobid!r}")
        workdir = options.get("chdir") or os.getcwd()
        name = options.get("job-name") or "sbatch"
        output = (options.get("output") or "slurm-%j.out").replace("%j", jobid).replace("%x", name)
        with self._lock:
            self._jobs[jobid] = _Submitted(
                name, time.time(), workdir, output if output.startswith("/") else f"{workdir}/{output}"
            )
        return jobid

    def records(self, jobids: Sequence[str] | None) -> list[JobRecord]:
        with self._lock:
            known = dict(self._jobs)
        wanted = list(known) if jobids is None else [j for j in jobids if j in known]
        if not wanted:
            return []
        seen = self._squeue(wanted)
        finished = [j for j in wanted if j not in seen or seen[j][0] in TERMINAL]
        if finished:
            seen.update(self._sacct(finished))  # accounting has the exit code of ended jobs
        user = getpass.getuser()
        return [
            JobRecord(
                jobid=jobid,
                name=known[jobid].name,
                user=user,
                state=state,
                submitted=known[jobid].submitted,
                started=start,
                ended=end if state in TERMINAL else None,
                exit_code=exit_code,
                workdir=known[jobid].workdir,
                output=known[jobid].output,
            )
            for jobid, (state, start, end, exit_code) in seen.items()
        ]

    def _squeue(self, jobids: list[str]) -> dict[str, tuple[str, float | None, float | None, str | None]]:
        try:
            out = _slurm(["squeue", "-h", "-t", "all", "-j", ",".join(jobids), "-o", "%i|%T|%S|%e"])
        except SubmitError as exc:
            if "Invalid job id" in str(exc):  # all of them purged already
                return {}
            raise
        rows = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 4 and parts[0] in jobids:
                state = _state(parts[1])
                start = None if state == "PENDING" else _epoch(parts[2])  # else a forecast
                rows[parts[0]] = (state, start, _epoch(parts[3]), None)
        return rows

    def _sacct(self, jobids: list[str]) -> dict[str, tuple[str, float | None, float | None, str | None]]:
        command = ["sacct", "-X", "-P", "-n", "-o", "jobid,state,start,end,exitcode", "-j", ",".join(jobids)]
        if self._completion_file:
            out = _slurm([*command, "-c"])
        else:
            try:
                out = _slurm(command)
                self._completion_file = False
            except SubmitError as exc:
                if _ACCOUNTING_DISABLED not in str(exc):
                    raise
                self._completion_file = True
                out = _slurm([*command, "-c"])
        rows = {}
        for line in out.splitlines():
            parts = line.split("|")
            if len(parts) == 5 and parts[0] in jobids:
                rows[parts[0]] = (_state(parts[1]), _epoch(parts[2]), _epoch(parts[3]), parts[4] or None)
        return rows

    def cancel(self, jobid: str, uid: int) -> None:
        _slurm(["scancel", jobid])

    def close(self) -> None:
        pass
