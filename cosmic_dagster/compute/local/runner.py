"""A one-machine batch system: runs one job script like a scheduler would.

Started detached by :class:`~cosmic_dagster.compute.local.compute.LocalCompute` (own session), so a job
outlives the Dagster run worker that submitted it and can be reattached. It waits for one of
``slots`` CPU slots (file locks), runs ``bash job.sh`` with output in ``job.out`` and records
state transitions in ``status.json`` (PENDING -> RUNNING -> COMPLETED | FAILED | CANCELLED).

Usage: ``python -m cosmic_dagster.compute.local.runner JOBDIR SLOTS_DIR SLOTS``
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cosmic_dagster.files import write_atomic


def write_status(job_dir: Path, **fields: object) -> None:
    path = job_dir / "status.json"
    current = json.loads(path.read_text()) if path.exists() else {}
    current.update(fields)
    write_atomic(path, json.dumps(current))


def acquire_slot(slots_dir: Path, slots: int) -> int:
    """Block until one of the slot lock files can be locked; the fd is kept open (lock held)."""
    slots_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for i in range(slots):
            fd = os.open(slots_dir / f"slot{i}.lock", os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return fd
            except BlockingIOError:
                os.close(fd)
        time.sleep(0.1)


def main(argv: list[str]) -> int:
    job_dir, slots_dir, slots = Path(argv[0]), Path(argv[1]), int(argv[2])
    meta = json.loads((job_dir / "job.json").read_text())
    workdir = Path(meta["workdir"])
    child: subprocess.Popen[bytes] | None = None

    def on_term(signum: int, frame: object) -> None:
        if child is not None and child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
        write_status(job_dir, state="CANCELLED", ended=time.time(), exit_code=None)
        sys.exit(143)

    signal.signal(signal.SIGTERM, on_term)
    write_status(job_dir, state="PENDING", runner_pid=os.getpid())
    acquire_slot(slots_dir, slots)
    env = {**os.environ, **meta.get("env", {})}
    with open(workdir / "job.out", "ab") as out:
        write_status(job_dir, state="RUNNING", started=time.time())
        child = subprocess.Popen(
            ["bash", str(workdir / "job.sh")],
            cwd=workdir,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            start_new_session=True,
        )
        code = child.wait()
    state = "COMPLETED" if code == 0 else "FAILED"
    write_status(job_dir, state=state, ended=time.time(), exit_code=code)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
