"""The reconciliation job (daily schedule, UI, ``cosmic-dagster reconcile``) and its launcher sensor.

The job lists the beamline tree over a date range (:mod:`cosmic_dagster.pipeline.reconcile`), adds
the partitions of missing scans (which also claims them against the watcher) and queues what must
run in the ledger; the ``reconcile_launcher`` sensor turns the queue into batched runs tagged
``launched-by=reconcile``. Runs are requested by a sensor because only sensors can both see the new
partitions and request runs through the daemon; it asks, like the arrival sensor, whether a run is
already planned for a scan, so a scan is never launched twice.
"""

import datetime as dt
import hashlib
import time
from collections.abc import Iterator
from typing import Any

import dagster as dg
from pydantic import Field

from cosmic_dagster import names
from cosmic_dagster.config import Settings
from cosmic_dagster.defs.assets import RAW, RECON
from cosmic_dagster.defs.partitions import scans
from cosmic_dagster.defs.resources import ArrivalsResource, StateResource
from cosmic_dagster.domain.quarantine import Quarantine
from cosmic_dagster.pipeline.reconcile import MISSING, Known, contiguous_batches, reconcile

QUEUE = "reconcile_queue"
AUDIT_KIND = "reconcile"


class ReconcileConfig(dg.Config):
    days: int | None = Field(
        default=None,
        description="day folders to list, counted back from today (default COSMIC_RECONCILE_DAYS)",
    )
    start: str | None = Field(default=None, description="first day to list, YYYY-MM-DD (overrides days)")
    end: str | None = Field(default=None, description="last day to list, YYYY-MM-DD (default today)")

    def date_range(self, default_days: int, today: dt.date) -> tuple[dt.date, dt.date]:
        try:
            end = dt.date.fromisoformat(self.end) if self.end else today
            start = (
                dt.date.fromisoformat(self.start)
                if self.start
                else end - dt.timedelta(days=(self.days or default_days) - 1)
            )
        except ValueError as exc:
            raise dg.Failure(
                f"bad reconcile date: {exc} (expected YYYY-MM-DD)", allow_retries=False
            ) from None
        if start > end:
            raise dg.Failure(f"reconcile start {start} is after its end {end}", allow_retries=False)
        return start, end


def build_reconcile(
    settings: Settings,
) -> tuple[dg.JobDefinition, dg.ScheduleDefinition, dg.SensorDefinition]:
    @dg.op(
        name=names.RECONCILE_OP,
        description="List the beamline tree over a date range; queue what is missing.",
    )
    def reconcile_op(
        context: dg.OpExecutionContext,
        config: ReconcileConfig,
        arrivals: ArrivalsResource,
        state: StateResource,
    ) -> Iterator[Any]:
        ledger = state.ledger()
        instance = context.instance
        start, end = config.date_range(settings.reconcile_days, dt.date.today())
        quarantine = Quarantine(ledger)
        known = Known(
            partitions=instance.get_dynamic_partitions(scans.name),
            registered=instance.get_materialized_partitions(RAW),
            reconstructed=instance.get_materialized_partitions(RECON),
            quarantined=quarantine.all().keys(),
            planned=lambda key: (
                instance.get_latest_planned_materialization_info(RAW, partition=key) is not None
            ),
        )
        report = reconcile(
            arrivals.lister(),
            known,
            start=start,
            end=end,
            now=time.time(),
            settle_seconds=arrivals.settle_seconds + arrivals.watch_grace_seconds,
            accept=arrivals.rejection,
        )
        for rejection in report.rejections:
            quarantine.add(rejection.relpath, "reconcile", rejection.reason)
        launch = report.to_launch()
        new = [key for key in launch if report.states[key] == MISSING]
        if new:
            instance.add_dynamic_partitions(scans.name, new)
        for key in launch:
            ledger.put(QUEUE, key, {"relpath": report.arrivals[key].relpath, "run_id": context.run_id})
        counts = report.counts()
        ledger.append(
            AUDIT_KIND,
            {context.run_id: {"start": str(start), "end": str(end), "listed": report.listed, **counts}},
        )
        context.log.info(report.summary())
        for key in launch:
            context.log.info(f"queued {report.states[key]} scan {key} ({report.arrivals[key].relpath})")
        yield dg.Output(
            None,
            metadata={
                "start": str(start),
                "end": str(end),
                "day_folders": report.folders,
                "listed": report.listed,
                "seconds": round(report.seconds, 2),
                "queued": len(launch),
                **counts,
            },
        )

    @dg.job(name=names.RECONCILE_JOB, description="Find scans the sensor and watcher missed and launch them.")
    def reconcile_job() -> None:
        reconcile_op()

    schedule = dg.ScheduleDefinition(
        name=names.RECONCILE_SCHEDULE,
        job=reconcile_job,
        cron_schedule=settings.reconcile_cron,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description="Daily reconciliation of the beamline tree with the registered scans.",
    )

    @dg.sensor(
        name=names.RECONCILE_SENSOR,
        job_name=names.SCAN_JOB,
        minimum_interval_seconds=settings.sensor_interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Launches the scans queued by the reconciliation job (tagged launched-by=reconcile).",
    )
    def reconcile_launcher(
        context: dg.SensorEvaluationContext, state: StateResource, arrivals: ArrivalsResource
    ) -> dg.SensorResult | dg.SkipReason:
        ledger = state.ledger()
        queued = ledger.all(QUEUE)
        if not queued:
            return dg.SkipReason("nothing queued by reconciliation")
        todo = [
            key
            for key in queued
            if context.instance.get_latest_planned_materialization_info(RAW, partition=key) is None
        ]
        order = {key: i for i, key in enumerate(context.instance.get_dynamic_partitions(scans.name))}
        batches = contiguous_batches(todo, order, arrivals.max_scans_per_run)
        ledger.delete_many(QUEUE, queued)
        if not batches:
            return dg.SkipReason(f"{len(queued)} queued scan(s) already have runs")
        context.log.info(f"launching {sum(map(len, batches))} reconciled scan(s) in {len(batches)} run(s)")
        return dg.SensorResult(
            run_requests=[
                dg.RunRequest(
                    run_key="reconcile-" + hashlib.sha256("\n".join(batch).encode()).hexdigest()[:16],
                    tags={
                        names.TAG_RANGE_START: batch[0],
                        names.TAG_RANGE_END: batch[-1],
                        names.TAG_SCANS: str(len(batch)),
                        names.TAG_SUBMITTED_BY: names.BY_RECONCILE,
                    },
                )
                for batch in batches
            ]
        )

    return reconcile_job, schedule, reconcile_launcher
