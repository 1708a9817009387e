"""Thin, robust wrappers around the Slurm commands (sbatch, squeue, sacct, scancel).

Used by :class:`~cosmic_dagster.compute.slurm.compute.SlurmCompute` and by the SFAPI emulator's local-Slurm
backend. Every command is bounded by a timeout and retried with backoff while the controller cannot
be reached (slurmctld restarting), then fails with :class:`SlurmCommandError`.

State comes from ``squeue -t all`` (it knows finished jobs for ``MinJobAge`` seconds, with exit
codes), then from accounting for older jobs: ``sacct`` where slurmdbd runs, else ``sacct -c``, which
reads the job-completion text file of a cluster without slurmdbd.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass

from cosmic_dagster.compute.protocol import TERMINAL_STATES
from cosmic_dagster.errors import CosmicError

log = logging.getLogger(__name__)

#: Upper bound for one command. Clients block about 2 x MessageTimeout while slurmctld is unreachable.
COMMAND_TIMEOUT_S = 60.0
#: Pauses between attempts while the controller cannot be reached.
RETRY_DELAYS_S: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
#: How far back ``find_job`` looks in accounting.
ACCOUNTING_LOOKBACK = "now-30days"

# The controller was not reached: nothing happened, so even sbatch may safely be repeated.
_UNREACHED = re.compile(
    r"Unable to contact slurm controller|connect failure|Connection refused|Resource temporarily unavailable",
    re.IGNORECASE,
)
# The controller may have been reached; repeating is safe only for queries and scancel.
_FLAKY = re.compile(
    r"Socket timed out|Zero Bytes were transmitted|Communication connection failure|slurm_receive_msg",
    re.IGNORECASE,
)
_SECRET_NAME = re.compile(r"SECRET|TOKEN|PASSW|PRIVATE|CREDENTIAL|API_?KEY", re.IGNORECASE)
_INVALID_JOB_ID = "Invalid job id specified"
_ACCOUNTING_DISABLED = "accounting storage is disabled"
_SQUEUE_FIELDS = "JobID:|,State:|,exit_code:|,StartTime:|,EndTime:|,STDOUT:|,Name:|"
_SACCT_FIELDS = "jobid,state,exitcode,start,end,jobname"

_completion_file_only: bool | None = None  # learnt from the first sacct call


@dataclass(frozen=True)
class SlurmJob:
    """One job as Slurm reports it; ``state`` is a bare JobState (``"CANCELLED by 0"`` -> CANCELLED)."""

    job_id: str
    name: str
    state: str
    exit_code: str | None  # "exit:signal", e.g. "3:0"; None while the job has not ended
    start: float | None  # epoch seconds
    end: float | None
    stdout_path: str | None


class SlurmCommandError(CosmicError, RuntimeError):
    """A Slurm command failed (after retries when the failure looked transient). ``uncertain``: the
    controller may have acted on it anyway (an sbatch that timed out may have queued its job)."""

    def __init__(self, command: Sequence[str], returncode: int | None, stderr: str, uncertain: bool = False):
        self.command = list(command)
        self.returncode = returncode
        self.stderr = stderr.strip()
        self.uncertain = uncertain
        why = f"exit code {returncode}" if returncode is not None else "no answer"
        detail = self.stderr[-2000:]
        super().__init__(f"{' '.join(self.command)} failed ({why})" + (f": {detail}" if detail else ""))


def sbatch(
    script_text: str,
    *,
    workdir: str | None = None,
    env: dict[str, str] | None = None,
    args: Sequence[str] = (),
) -> str:
    """Submit ``script_text`` (on stdin) and return the job id.

    sbatch exports its environment to the job (and into slurmctld's state files): this process's
    environment without variables whose names look secret, plus ``env``. ``args`` are extra sbatch
    options, which take precedence over the script's ``#SBATCH`` lines."""
    command = ["sbatch", "--parsable"]
    if workdir is not None:
        command.append(f"--chdir={workdir}")
    command.extend(args)
    inherited = {key: value for key, value in os.environ.items() if not _SECRET_NAME.search(key)}
    out = _run(command, stdin=script_text, env={**inherited, **(env or {})}, idempotent=False)
    job_id = out.strip().split(";", 1)[0]
    if not job_id:
        raise SlurmCommandError(command, 0, f"sbatch printed no job id: {out!r}")
    return job_id


def job_states(job_ids: Sequence[str]) -> dict[str, SlurmJob]:
    """The jobs Slurm knows among ``job_ids``, keyed by id; unknown ids are left out.

    One ``squeue`` call for all ids; only jobs it no longer knows are looked up in accounting."""
    wanted = list(dict.fromkeys(str(job_id) for job_id in job_ids))
    if not wanted:
        return {}
    for job_id in wanted:
        if not re.fullmatch(r"[0-9]+(_[0-9]+)?", job_id):
            raise ValueError(f"not a Slurm job id: {job_id!r}")
    found = {job.job_id: job for job in _squeue(["-j", ",".join(wanted)]) if job.job_id in wanted}
    missing = [job_id for job_id in wanted if job_id not in found]
    if missing:
        for job in _accounting(["-j", ",".join(missing)]):
            if job.job_id in missing:
                found[job.job_id] = job  # the last record of a requeued job wins
    return found


def find_job(name: str) -> SlurmJob | None:
    """The newest job of this user called ``name``: from ``squeue`` if it still knows one, else from
    accounting (which lists only the user's own jobs, except for administrators)."""
    if not name or "," in name or "\n" in name:
        raise ValueError(f"not a usable job name: {name!r}")
    jobs = [job for job in _squeue(["--me", "-n", name]) if job.name == name]
    if not jobs:
        # ``sacct -c`` ignores --name, hence the filter here.
        jobs = [job for job in _accounting(["--name", name, "-S", ACCOUNTING_LOOKBACK]) if job.name == name]
    return max(jobs, key=lambda job: _id_order(job.job_id), default=None)


def scancel(job_id: str) -> None:
    """Cancel a job; cancelling a job that already ended is not an error."""
    try:
        _run(["scancel", str(job_id)])
    except SlurmCommandError as exc:
        if _INVALID_JOB_ID not in exc.stderr and "already completing or completed" not in exc.stderr:
            raise


def sinfo() -> str:
    """``sinfo`` output (partitions and node states); raises when the controller cannot be reached."""
    return _run(["sinfo", "-h", "-o", "%P %a %D %t"])


# --- internals -----------------------------------------------------------------------------------
def _squeue(selection: list[str]) -> list[SlurmJob]:
    try:
        out = _run(["squeue", "-h", "-t", "all", *selection, "-O", _SQUEUE_FIELDS])
    except SlurmCommandError as exc:
        if _INVALID_JOB_ID in exc.stderr:  # none of the ids is known any more
            return []
        raise
    return [job for line in out.splitlines() if (job := _parse_squeue_line(line))]


def _parse_squeue_line(line: str) -> SlurmJob | None:
    parts = line.split("|")
    if len(parts) < 7:
        return None
    job_id, state, raw_exit, start, end, stdout = (p.strip() for p in parts[:6])
    name = "|".join(parts[6:]).rstrip("|").strip()
    state = normalise_state(state)
    ended = state in TERMINAL_STATES
    # For jobs not started/ended yet squeue prints the scheduler's forecast (or the time limit).
    return SlurmJob(
        job_id,
        name,
        state,
        _exit_code_from_status(raw_exit) if ended else None,
        None if state == "PENDING" else _epoch(start),
        _epoch(end) if ended else None,
        stdout or None,
    )


def _accounting(selection: list[str]) -> list[SlurmJob]:
    """Jobs from ``sacct`` (slurmdbd) or ``sacct -c`` (job-completion file), oldest first."""
    global _completion_file_only
    base = ["sacct", "-X", "-P", "-n", "-o", _SACCT_FIELDS, *selection]
    try:
        if _completion_file_only:
            out = _run([*base, "-c"])
        else:
            try:
                out = _run(base)
                _completion_file_only = False
            except SlurmCommandError as exc:
                if _ACCOUNTING_DISABLED not in exc.stderr:
                    raise
                _completion_file_only = True
                out = _run([*base, "-c"])
    except SlurmCommandError as exc:
        if exc.returncode is None or _UNREACHED.search(exc.stderr) or _FLAKY.search(exc.stderr):
            raise
        # A cluster that keeps no record of finished jobs: they are simply unknown.
        log.warning("Slurm accounting unavailable, finished jobs cannot be looked up: %s", exc)
        return []
    jobs = []
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) < 6:
            continue
        job_id, state, exit_code, start, end = parts[:5]
        name = "|".join(parts[5:])
        jobs.append(
            SlurmJob(
                job_id, name, normalise_state(state), exit_code or None, _epoch(start), _epoch(end), None
            )
        )
    return jobs


def normalise_state(raw: str) -> str:
    """``"CANCELLED by 0"`` -> ``"CANCELLED"``, ``"FAILED+"`` (truncated by sacct) -> ``"FAILED"``."""
    words = raw.split()
    return words[0].rstrip("+").upper() if words else "UNKNOWN"


def _exit_code_from_status(raw: str) -> str | None:
    """squeue's ``exit_code`` is the raw wait status; Slurm writes it as ``exit:signal``."""
    if not raw.isdigit():
        return None
    status = int(raw)
    return f"{status >> 8}:{status & 0x7F}"


def _epoch(raw: str) -> float | None:
    raw = raw.strip()
    return float(raw) if raw.isdigit() and raw != "0" else None


def _id_order(job_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"[0-9]+", job_id))


def _run(
    command: list[str],
    *,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
    idempotent: bool = True,
) -> str:
    """Run one Slurm command; retry while the controller is unreachable; return stdout.

    ``env`` replaces the environment; by default times are printed as epoch seconds."""
    if env is None:
        env = {**os.environ, "SLURM_TIME_FORMAT": "%s"}
    delays = iter(RETRY_DELAYS_S)
    while True:
        try:
            done = subprocess.run(
                command,
                input=stdin,
                capture_output=True,
                text=True,
                env=env,
                timeout=COMMAND_TIMEOUT_S,
                check=False,
            )
        except FileNotFoundError:
            raise SlurmCommandError(command, None, f"{command[0]} not found: is Slurm installed?") from None
        except subprocess.TimeoutExpired:
            # A submission that timed out may have gone through: never repeat it blindly.
            error = SlurmCommandError(command, None, f"no answer within {COMMAND_TIMEOUT_S:.0f} s", True)
            retry = idempotent
        else:
            if done.returncode == 0:
                return done.stdout
            unreached, flaky = bool(_UNREACHED.search(done.stderr)), bool(_FLAKY.search(done.stderr))
            error = SlurmCommandError(command, done.returncode, done.stderr, flaky and not unreached)
            retry = unreached or (idempotent and flaky)
        delay = next(delays, None) if retry else None
        if delay is None:
            raise error
        log.warning("%s; retrying in %.0f s", error, delay)
        time.sleep(delay)
