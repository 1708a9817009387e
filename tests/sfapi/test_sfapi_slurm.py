"""The emulator's real-Slurm backend: SfapiCompute -> sfapi-client -> emulator -> sbatch/squeue/sacct."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.compute.sfapi.compute import SfapiCompute
from cosmic_dagster.emulators.sfapi.local_slurm import SlurmScheduler
from cosmic_dagster.emulators.sfapi.server import SfapiEmulator

pytestmark = [pytest.mark.slurm, pytest.mark.slow]


def test_jobs_run_end_to_end_on_local_slurm(
    slurm_cluster: Path,
    start_emulator: Callable[..., SfapiEmulator],
    make_compute: Callable[..., SfapiCompute],
    make_spec: Callable[..., JobSpec],
) -> None:
    emulator = start_emulator(scheduler=SlurmScheduler())
    tag = uuid.uuid4().hex[:8]  # Slurm remembers jobs of earlier sessions
    good = make_spec(f"recon.ok{tag}.00000001", seconds=1)
    bad = make_spec(f"recon.bad{tag}.00000002", body="echo 'engine: out of patience' >&2; exit 3")
    compute = make_compute(emulator, poll_interval_s=0.5, max_poll_interval_s=1.0)

    outcomes = compute.run_batch([good, bad])
    again = make_compute(emulator, poll_interval_s=0.5).run_batch([good])[good.name]

    assert outcomes[good.name].state == "COMPLETED"
    assert outcomes[good.name].run_s is not None and outcomes[good.name].run_s >= 1
    assert json.loads(compute.fetch(f"{good.workdir}/summary.json"))["iterations"] == 3
    assert outcomes[bad.name].state == "FAILED"
    assert outcomes[bad.name].log_tail.endswith("engine: out of patience")
    assert again.reattached and again.job_id == outcomes[good.name].job_id
    assert sorted(job["name"] for job in emulator.jobs()) == sorted([good.name, bad.name])
