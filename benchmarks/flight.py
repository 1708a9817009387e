"""Flight check step times against the loopback NERSC site (real globus-sdk and sfapi-client,
production retry settings), green and with each fault injected: how long a check takes and how
long a broken dependency takes to be reported.

Usage: python benchmarks/flight.py [--runs 5] [--faults]
(--faults adds "SFAPI 5xx", whose detection waits out sfapi-client's own retries: about a minute.)
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from cosmic_dagster.config import Settings
from cosmic_dagster.defs.profiles import resources_for
from cosmic_dagster.emulators.globus.faults import CallFault
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler
from cosmic_dagster.emulators.sfapi.server import HttpFault
from cosmic_dagster.emulators.site import LoopbackSite
from cosmic_dagster.pipeline.flight import STEPS, FlightCheck, FlightReport


def flight(trivial_job: bool) -> tuple[FlightReport, float]:
    settings = Settings.from_env()
    resources = resources_for(settings)
    ledger = resources["state"].ledger()
    compute = resources["compute"]
    check = FlightCheck(
        transfer=resources["transfer"].adapter(ledger),
        compute=compute.adapter(ledger),
        beamline_root=settings.beamline_root,
        recon_root=compute.recon_root,
        slurm=compute.directives(),
    )
    started = time.monotonic()
    report = check.run(trivial_job=trivial_job)
    return report, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--faults", action="store_true")
    args = parser.parse_args()
    base = Path(tempfile.mkdtemp(prefix="flight-bench-"))
    site = LoopbackSite(base, SimulatedScheduler(queue_wait_s=0.5, spool_dir=base / "spool"))
    os.environ.update({**site.env, "COSMIC_DATA_ROOT": str(base / "data")})
    try:
        per_step: dict[str, list[float]] = {s: [] for s in STEPS}
        totals = []
        for _ in range(args.runs):
            report, total = flight(trivial_job=True)
            assert report.ok, report.failure_text()
            totals.append(total)
            for step in report.steps:
                per_step[step.step].append(step.seconds)
        print(f"green flight check, {args.runs} runs (median s):")
        for step, values in per_step.items():
            print(f"  {step:<15} {statistics.median(values):7.3f}")
        print(f"  {'total':<15} {statistics.median(totals):7.3f}")

        detect = {}
        site.globus.faults.add(CallFault(call="*", status=503, times=None))
        report, detect["globus_down"] = flight(trivial_job=False)
        assert [s.step for s in report.failed] == ["collections"], report.failure_text()
        site.globus.faults.clear()
        site.sfapi.set_faults(machine_status="unavailable")
        report, detect["machine_down"] = flight(trivial_job=True)
        assert [s.step for s in report.failed] == ["compute_status"], report.failure_text()
        site.sfapi.set_faults(machine_status="active")
        if args.faults:
            site.sfapi.set_faults(http_errors=[HttpFault(503, count=100_000, route="status")])
            report, detect["sfapi_5xx"] = flight(trivial_job=True)
            assert [s.step for s in report.failed] == ["compute_status"], report.failure_text()
        print("time until the failed step is reported (s):")
        for fault, seconds in detect.items():
            print(f"  {fault:<15} {seconds:7.3f}")
        figures = " ".join(f"detect_{k}_s={v:.2f}" for k, v in detect.items())
        print(
            f"RESULT flight_total_s={statistics.median(totals):.2f} "
            f"canary_copy_s={statistics.median(per_step['canary_copy']):.2f} "
            f"trivial_job_s={statistics.median(per_step['trivial_job']):.2f} {figures}"
        )
    finally:
        site.stop()


if __name__ == "__main__":
    main()
