"""The flight check job and its schedule (every 12 h by default, ``COSMIC_FLIGHT_CRON``).

The checks are :mod:`cosmic_dagster.pipeline.flight`; here they run over the active profile's
resources. A failed step fails the run with the steps' reasons, so the failure alert sensor posts
it like any failed run (one alert per check, naming the step); every step's outcome is in the
run's logs.
"""

import dagster as dg
from pydantic import Field

from cosmic_dagster import names
from cosmic_dagster.defs.resources import ArrivalsResource, ComputeResource, StateResource, TransferResource
from cosmic_dagster.pipeline.flight import FlightCheck


class FlightConfig(dg.Config):
    trivial_job: bool = Field(
        default=False, description="also submit a job that only echoes, and wait for it to complete"
    )


@dg.op(name=names.FLIGHT_OP, description="Canary copy, collections, compute status (and a trivial job).")
def flight_check(
    context: dg.OpExecutionContext,
    config: FlightConfig,
    arrivals: ArrivalsResource,
    state: StateResource,
    transfer: TransferResource,
    compute: ComputeResource,
) -> None:
    ledger = state.ledger()
    report = FlightCheck(
        transfer=transfer.adapter(ledger),
        compute=compute.adapter(ledger),
        beamline_root=None if arrivals.remote() else arrivals.beamline_root,
        recon_root=compute.recon_root,
        slurm=compute.directives(),
    ).run(trivial_job=config.trivial_job)
    for step in report.steps:
        links = "".join(f" {k}={v}" for k, v in step.links.items())
        line = f"{step.step}: {step.status} in {step.seconds:.2f} s: {step.detail}{links}"
        (context.log.error if step.status == "failed" else context.log.info)(line)
    if not report.ok:
        raise dg.Failure(
            description=report.failure_text(),
            metadata={"failed_steps": [s.step for s in report.failed]},
            allow_retries=False,
        )


def build_flight(cron: str) -> tuple[dg.JobDefinition, dg.ScheduleDefinition]:
    @dg.job(name=names.FLIGHT_JOB, description="Checks every external dependency the way a scan uses it.")
    def flight_check_job() -> None:
        flight_check()

    schedule = dg.ScheduleDefinition(
        name=names.FLIGHT_SCHEDULE,
        job=flight_check_job,
        cron_schedule=cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        tags={names.TAG_SUBMITTED_BY: names.BY_SCHEDULE},
        description="Flight check of Globus, NERSC and the compute machine; a failure posts an alert.",
    )
    return flight_check_job, schedule
