"""SlurmCompute on a real one-node Slurm: outcomes, reattach after a killed worker, superseding,
and a controller restart in the middle of a job."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from cosmic_dagster.compute.base import LEDGER_KIND
from cosmic_dagster.compute.jobscript import EpieParams, SlurmDirectives, job_name, render_script
from cosmic_dagster.compute.protocol import ComputeUnavailable, JobSpec
from cosmic_dagster.compute.slurm import cli as slurm_cli
from cosmic_dagster.compute.slurm.compute import SlurmCompute
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.ptycho.simulate import SimulationSpec, write_scan

pytestmark = pytest.mark.slurm


def _compute(ledger_path: Path) -> SlurmCompute:
    return SlurmCompute(Ledger(ledger_path), poll_interval_s=0.5, max_poll_interval_s=1.0, timeout_s=240)


def _spec(name: str, workdir: Path, body: str, directives: str = "") -> JobSpec:
    script = f"#!/bin/bash\n{directives}set -euo pipefail\n{body}\n"
    return JobSpec(name=name, script=script, workdir=str(workdir))


def _count_jobs(name: str) -> int:
    """Jobs Slurm knows under ``name`` (squeue -t all shows every job of the last MinJobAge seconds)."""
    out = subprocess.run(
        ["squeue", "-h", "-t", "all", "-n", name, "-o", "%i"], capture_output=True, text=True, check=True
    ).stdout
    return len(out.split())


def test_tiny_job_and_epie_job_complete_in_one_batch(slurm_cluster, tmp_path, unique):
    tiny = _spec(
        f"{unique}.tiny",
        tmp_path / "tiny",
        """echo "running on $(hostname)"; echo '{"ok": true}' > summary.json""",
    )
    cxi = write_scan(tmp_path / "NS_261124001_ccdframes_0_0.cxi", SimulationSpec.tiny())
    params = EpieParams(iterations=5, probe_refine_start=2)
    name = job_name(f"{unique}.recon", "NS_261124001_ccdframes_0_0", params)
    workdir = tmp_path / "epie"
    slurm = SlurmDirectives(time_limit="00:10:00")
    script = render_script(
        params, input_path=str(cxi), workdir=str(workdir), job_name=name, slurm=slurm, python=sys.executable
    )
    epie = JobSpec(name=name, script=script, workdir=str(workdir))
    specs = [tiny, epie]
    seen: list[tuple[str, str, bool]] = []

    outcomes = _compute(tmp_path / "ledger.db").run_batch(
        specs, on_submitted=lambda spec, job_id, reattached: seen.append((spec.name, job_id, reattached))
    )

    assert [(name, reattached) for name, _, reattached in seen] == [(s.name, False) for s in specs]
    for spec in specs:
        outcome = outcomes[spec.name]
        assert outcome.state == "COMPLETED", (outcome, Path(spec.workdir, "job.out").read_text())
        assert outcome.started_at is not None and outcome.ended_at >= outcome.started_at
        assert Path(spec.workdir, "job.sh").read_text() == spec.script
    compute = _compute(tmp_path / "ledger.db")
    assert json.loads(compute.fetch(str(tmp_path / "tiny" / "summary.json"))) == {"ok": True}
    assert "running on" in (tmp_path / "tiny" / "job.out").read_text()
    assert (workdir / "reconstruction.h5").stat().st_size > 0
    assert (workdir / "preview.png").read_bytes().startswith(b"\x89PNG")
    assert json.loads(compute.fetch(str(workdir / "summary.json")))


def test_failed_and_cancelled_jobs_are_outcomes_with_their_log(slurm_cluster, tmp_path, unique):
    failing = _spec(
        f"{unique}.fail", tmp_path / "fail", "echo 'reading scan'; echo 'bad frame 7' >&2; exit 3"
    )
    cancelled = _spec(f"{unique}.cancel", tmp_path / "cancel", "echo started; sleep 300")
    compute = _compute(tmp_path / "ledger.db")

    def cancel_when_running(spec: JobSpec, job_id: str, reattached: bool) -> None:
        if spec is cancelled:
            threading.Thread(target=_cancel_once_running, args=(compute, job_id), daemon=True).start()

    outcomes = compute.run_batch([failing, cancelled], on_submitted=cancel_when_running)

    failed = outcomes[failing.name]
    assert failed.state == "FAILED" and not failed.ok
    assert failed.log_tail.splitlines() == ["reading scan", "bad frame 7"]
    stopped = outcomes[cancelled.name]
    assert stopped.state == "CANCELLED"
    assert "started" in stopped.log_tail and "CANCELLED" in stopped.log_tail  # slurmstepd's notice


def _cancel_once_running(compute: SlurmCompute, job_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = slurm_cli.job_states([job_id]).get(job_id)
        if job is not None and job.state == "RUNNING":
            break
        time.sleep(0.2)
    time.sleep(0.5)  # let the script print its first line
    compute.cancel(job_id)


@pytest.mark.slow
def test_time_limit_gives_timeout(slurm_cluster, tmp_path, unique):
    """About 70 s: Slurm's smallest time limit is one minute."""
    directives = "#SBATCH --time=00:01:00\n"
    spec = _spec(f"{unique}.timeout", tmp_path / "timeout", "echo waiting; sleep 600", directives)
    outcome = _compute(tmp_path / "ledger.db").run_batch([spec])[spec.name]
    assert outcome.state == "TIMEOUT"
    assert "waiting" in outcome.log_tail and "TIME LIMIT" in outcome.log_tail


_WORKER = """
import sys
from cosmic_dagster.compute.protocol import JobSpec
from cosmic_dagster.compute.slurm.compute import SlurmCompute
from cosmic_dagster.domain.ledger import Ledger
ledger, name, script, workdir = sys.argv[1:5]
SlurmCompute(Ledger(ledger), poll_interval_s=0.5).run_batch([JobSpec(name, script, workdir)])
"""


def test_rerun_after_killed_worker_reattaches_to_the_same_job(slurm_cluster, tmp_path, unique):
    spec = _spec(f"{unique}.reattach", tmp_path / "job", "sleep 3; echo finished")
    ledger_path = tmp_path / "ledger.db"
    worker = subprocess.Popen(
        [sys.executable, "-c", _WORKER, str(ledger_path), spec.name, spec.script, spec.workdir]
    )
    try:
        deadline = time.monotonic() + 60
        while (record := Ledger(ledger_path).get(LEDGER_KIND, spec.name)) is None:
            assert worker.poll() is None and time.monotonic() < deadline, "worker never recorded a job id"
            time.sleep(0.1)
    finally:
        worker.send_signal(signal.SIGKILL)
        worker.wait()

    outcome = _compute(ledger_path).run_batch([spec])[spec.name]

    assert (outcome.job_id, outcome.reattached, outcome.state) == (record["job_id"], True, "COMPLETED")
    assert _count_jobs(spec.name) == 1
    # With the ledger lost as well, the job is found by its name.
    again = _compute(tmp_path / "fresh-ledger.db").run_batch([spec])[spec.name]
    assert (again.job_id, again.reattached) == (record["job_id"], True)
    assert _count_jobs(spec.name) == 1


def test_failed_job_is_superseded_by_exactly_one_new_job(slurm_cluster, tmp_path, unique):
    spec = _spec(
        f"{unique}.retry",
        tmp_path / "job",
        "if [ ! -e attempted ]; then touch attempted; echo 'first attempt fails'; exit 3; fi; echo ok",
    )
    ledger_path = tmp_path / "ledger.db"
    first = _compute(ledger_path).run_batch([spec])[spec.name]
    second = _compute(ledger_path).run_batch([spec])[spec.name]
    third = _compute(ledger_path).run_batch([spec])[spec.name]

    assert first.state == "FAILED" and "first attempt fails" in first.log_tail
    assert (second.state, second.reattached) == ("COMPLETED", False) and second.job_id != first.job_id
    assert (third.job_id, third.reattached) == (second.job_id, True)
    assert _count_jobs(spec.name) == 2


@pytest.mark.slow
def test_wait_survives_a_controller_restart_mid_job(slurm_cluster, tmp_path, unique, caplog):
    """slurmctld is down for 10 s while the job runs: queries fail (connect failure), are retried,
    and the job, kept by slurmd, still completes."""
    spec = _spec(f"{unique}.restart", tmp_path / "job", "sleep 12; echo survived")
    compute = _compute(tmp_path / "ledger.db")
    restarts: list[subprocess.CompletedProcess[str]] = []
    threads: list[threading.Thread] = []

    def restart_when_running(job_id: str) -> None:
        _wait_running(job_id)
        restarts.append(
            subprocess.run(
                [str(slurm_cluster), "restart-controller", "10"], capture_output=True, text=True, timeout=120
            )
        )

    def on_submitted(spec: JobSpec, job_id: str, reattached: bool) -> None:
        threads.append(threading.Thread(target=restart_when_running, args=(job_id,), daemon=True))
        threads[0].start()

    try:
        with caplog.at_level(logging.WARNING, logger=slurm_cli.__name__):
            outcome = compute.run_batch([spec], on_submitted=on_submitted)[spec.name]
    finally:  # never leave the controller down for the next test
        for thread in threads:
            thread.join(timeout=120)

    assert restarts and restarts[0].returncode == 0, restarts
    assert outcome.state == "COMPLETED"
    assert (tmp_path / "job" / "job.out").read_text() == "survived\n"
    assert any("Unable to contact slurm controller" in r.message for r in caplog.records)


def _wait_running(job_id: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        job = slurm_cli.job_states([job_id]).get(job_id)
        if job is not None and job.state == "RUNNING":
            return
        time.sleep(0.2)


def test_unreachable_controller_means_compute_unavailable(slurm_cluster, tmp_path, monkeypatch):
    """A controller nobody listens for (wrong port): nothing is submitted, the error says why."""
    conf = Path("/etc/slurm/slurm.conf").read_text() + "SlurmctldPort=9\nMessageTimeout=1\n"
    (tmp_path / "slurm.conf").write_text(conf)
    monkeypatch.setenv("SLURM_CONF", str(tmp_path / "slurm.conf"))
    monkeypatch.setattr(slurm_cli, "RETRY_DELAYS_S", ())
    with pytest.raises(
        ComputeUnavailable, match=r"Slurm is not reachable.*Unable to contact slurm controller"
    ):
        _compute(tmp_path / "ledger.db").run_batch([_spec("never.submitted", tmp_path / "job", "true")])
    assert not (tmp_path / "job").exists()
