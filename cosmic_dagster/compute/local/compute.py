"""Reconstruction jobs as local processes (the default ``local`` profile).

Each job runs detached under :mod:`cosmic_dagster.compute.local.runner`, which plays the batch
system: a fixed number of CPU slots, a job id, states like Slurm's, a ``job.out`` log. Jobs
survive the death of the Dagster run worker, so the shared reattach logic of
:class:`~cosmic_dagster.compute.base.SchedulerCompute` applies unchanged.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

from cosmic_dagster.compute.base import JobStatus, SchedulerCompute
from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.processes import process_start_time
from cosmic_dagster.files import tail_lines


class LocalCompute(SchedulerCompute):
    def __init__(self, jobs_dir: str | Path, ledger: Ledger, *, slots: int | None = None, **kw: float):
        kw.setdefault("poll_interval_s", 0.5)
        kw.setdefault("max_poll_interval_s", 2.0)
        kw.setdefault("not_found_grace_s", 10.0)
        super().__init__(ledger, **kw)
        self.jobs_dir = Path(jobs_dir)
        self.slots = slots or max(1, os.cpu_count() or 1)

    def submit(self, spec: JobSpec) -> str:
        job_id = f"{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:8]}"
        job_dir = self.jobs_dir / job_id
        job_dir.mkdir(parents=True)
        workdir = Path(spec.workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "job.sh").write_text(spec.script)
        (workdir / "job.out").write_bytes(b"")
        (job_dir / "job.json").write_text(
            json.dumps(
                {"name": spec.name, "workdir": str(workdir), "env": spec.env, "submitted": time.time()}
            )
        )
        by_name = self.jobs_dir / "by-name"
        by_name.mkdir(exist_ok=True)
        link = by_name / f"{spec.name}.tmp"
        link.write_text(job_id)
        os.replace(link, by_name / spec.name)
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cosmic_dagster.compute.local.runner",
                str(job_dir),
                str(self.jobs_dir / "slots"),
                str(self.slots),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=open(job_dir / "runner.err", "wb"),  # noqa: SIM115 - handed to the child
            start_new_session=True,
        )
        return job_id

    def _status(self, job_id: str) -> JobStatus | None:
        job_dir = self.jobs_dir / job_id
        status_file = job_dir / "status.json"
        if not status_file.exists():
            return None if not (job_dir / "job.json").exists() else JobStatus(job_id, "PENDING")
        status = json.loads(status_file.read_text())
        state = status["state"]
        if state in ("PENDING", "RUNNING") and not _alive(status.get("runner_pid")):
            state = "NODE_FAIL"  # the runner died without recording an end (machine reboot, kill -9)
        return JobStatus(job_id, state, status.get("started"), status.get("ended"))

    def statuses(self, job_ids: Sequence[str]) -> dict[str, JobStatus]:
        found = {job_id: self._status(job_id) for job_id in job_ids}
        return {job_id: status for job_id, status in found.items() if status is not None}

    def find_by_name(self, name: str) -> JobStatus | None:
        ref = self.jobs_dir / "by-name" / name
        return self._status(ref.read_text().strip()) if ref.exists() else None

    def log_tail(self, job_id: str, spec: JobSpec, lines: int = 40) -> str:
        text = (Path(spec.workdir) / "job.out").read_text(errors="replace")
        return tail_lines(text, lines)

    def fetch(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def cancel(self, job_id: str) -> None:
        status = json.loads((self.jobs_dir / job_id / "status.json").read_text())
        pid = status.get("runner_pid")
        if _alive(pid):
            os.kill(pid, signal.SIGTERM)


def _alive(pid: int | None) -> bool:
    return pid is not None and pid > 0 and process_start_time(pid) is not None
