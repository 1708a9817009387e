"""Reconstruction jobs on a site's own Slurm cluster (sbatch/squeue/sacct on this machine, no SFAPI).

Only the translation to Slurm lives here; submit-or-reattach-and-wait is
:class:`~cosmic_dagster.compute.base.SchedulerCompute`. Slurm commands that fail while the
controller restarts are retried inside :mod:`~cosmic_dagster.compute.slurm.cli`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

from cosmic_dagster.compute.base import JobStatus, SchedulerCompute, SubmissionUnconfirmed
from cosmic_dagster.compute.jobscript import JOB_OUTPUT
from cosmic_dagster.compute.protocol import ComputeUnavailable, JobSpec
from cosmic_dagster.compute.slurm import cli as slurm_cli
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.files import tail_lines

_TAIL_BYTES = 64 * 1024
_OUTPUT_DIRECTIVE = re.compile(r"^#SBATCH\s+(--output|-o)\b", re.MULTILINE)


class SlurmCompute(SchedulerCompute):
    """Jobs submitted with sbatch as the user running Dagster; their log is ``{workdir}/job.out``."""

    def __init__(self, ledger: Ledger, **kw: float):
        kw.setdefault("poll_interval_s", 2.0)
        kw.setdefault("max_poll_interval_s", 30.0)
        kw.setdefault("not_found_grace_s", 60.0)
        super().__init__(ledger, **kw)

    def check_available(self) -> None:
        try:
            slurm_cli.sinfo()
        except slurm_cli.SlurmCommandError as exc:
            raise ComputeUnavailable(f"Slurm is not reachable: {exc}") from exc

    def submit(self, spec: JobSpec) -> str:
        """Write ``{workdir}/job.sh``, sbatch it as ``spec.name`` (Slurm needs the workdir for its log)."""
        workdir = Path(spec.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "job.sh").write_text(spec.script)
        args = [f"--job-name={spec.name}"]
        if not _OUTPUT_DIRECTIVE.search(spec.script):
            args.append(f"--output={workdir / JOB_OUTPUT}")
        try:
            return slurm_cli.sbatch(spec.script, workdir=str(workdir), env=spec.env, args=args)
        except slurm_cli.SlurmCommandError as exc:
            if exc.uncertain:
                raise SubmissionUnconfirmed(f"sbatch of job {spec.name}: {exc}") from exc
            raise ComputeUnavailable(f"sbatch refused job {spec.name}: {exc}") from exc

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        return {job_id: _status(job) for job_id, job in slurm_cli.job_states(job_ids).items()}

    def find_by_name(self, name: str) -> JobStatus | None:
        job = slurm_cli.find_job(name)
        return _status(job) if job is not None else None

    def log_tail(self, job_id: str, spec: JobSpec, lines: int = 40) -> str:
        """The end of ``{workdir}/job.out``, or of the file Slurm reports when the script chose another."""
        path = Path(spec.workdir) / JOB_OUTPUT
        if not path.exists():
            job = slurm_cli.job_states([job_id]).get(job_id)
            if job is not None and job.stdout_path:
                path = Path(job.stdout_path)
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - _TAIL_BYTES))
            text = f.read().decode(errors="replace")
        return tail_lines(text, lines)

    def fetch(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def cancel(self, job_id: str) -> None:
        slurm_cli.scancel(job_id)


def _status(job: slurm_cli.SlurmJob) -> JobStatus:
    return JobStatus(job.job_id, job.state, job.start, job.end)
