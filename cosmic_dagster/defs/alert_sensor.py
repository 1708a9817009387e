"""The failure alert sensor: each failed run of this code location -> one webhook post.

**Delivery: in order, at least once, never silently dropped.** This is a plain sensor with its
own cursor (the storage id of the last run failure handled), not ``@run_failure_sensor``: in
Dagster 1.13 a run status sensor moves its cursor past a run even when the sensor function
raises ("side effects we don't want to repeat"), so an alert that could not be posted would be
lost. Here the cursor only passes a failure once its alert was taken (or the run is not ours):

* webhook down, nothing posted this tick: the tick *fails* with the reason (red in the UI), the
  cursor stays, the next tick tries again;
* some alerts posted, then the webhook went down: the tick ends with the cursor after the last
  one posted (a failed tick would not save it and they would be posted twice) and a warning;
  the next tick resumes from there.

A duplicate remains possible only when the receiver took a post but its answer was lost; the
payload's ``run_id`` lets a receiver drop it. Without ``COSMIC_ALERT_WEBHOOK_URL`` the sensor
still runs and skips, saying so, and keeps its cursor current: setting the URL later does not
post the backlog of failures from before. The webhook URL is never logged or shown.
"""

from __future__ import annotations

import time

import dagster as dg

from cosmic_dagster import names
from cosmic_dagster.domain.alerts import AlertDeliveryError, FailedRun, ScanFailure, build_alert, post_alert

INTERVAL_S = 5
FETCH_LIMIT = 50
TICK_BUDGET_S = 30.0  # start no post after this; the daemon gives a sensor evaluation 60 s


def _latest_failure(instance: dg.DagsterInstance) -> str:
    records = instance.fetch_run_status_changes(dg.DagsterEventType.RUN_FAILURE, limit=1).records
    return str(records[0].storage_id if records else -1)


def _in_this_location(context: dg.SensorEvaluationContext, run: dg.DagsterRun) -> bool:
    """As Dagster's run status sensors decide it (runs executed in process have no origin)."""
    origin, here = run.remote_job_origin, context.code_location_origin
    if origin is None or here is None:
        return origin is None and here is None
    repository = origin.repository_origin
    return (
        repository.code_location_origin.location_name == here.location_name
        and repository.repository_name == context.repository_name
    )


def _failed_run(instance: dg.DagsterInstance, run: dg.DagsterRun, record: dg.EventLogRecord) -> FailedRun:
    """The failed scans the pipeline step recorded, other step failure texts, and without any
    (worker crash, timeout) the run failure's own text."""
    errors: list[str] = []
    scans: list[ScanFailure] = []
    steps = instance.get_records_for_run(run.run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
    for step in steps:
        event = step.event_log_entry.dagster_event
        data = event.step_failure_data if event else None
        user = data.user_failure_data if data else None
        recorded = user.metadata.get(names.META_SCAN_FAILURES) if user else None
        if isinstance(recorded, dg.JsonMetadataValue) and isinstance(recorded.data, list):
            scans += [ScanFailure(**failure) for failure in recorded.data]
        elif user and user.description:
            errors.append(user.description)
        elif data and data.error:
            errors.append(data.error.message)
    if not errors and not scans:
        event = record.event_log_entry.dagster_event
        job_data = event.job_failure_data if event else None
        if job_data and job_data.error:
            errors.append(job_data.error.message)
        else:
            errors.append(event.message if event and event.message else record.event_log_entry.user_message)
    return FailedRun(run_id=run.run_id, job=run.job_name, tags=run.tags, errors=errors, scans=scans)


def build_alert_sensor(webhook_url: str | None, ui_url: str) -> dg.SensorDefinition:
    @dg.sensor(
        name=names.ALERT_SENSOR,
        minimum_interval_seconds=INTERVAL_S,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Posts each failed run (scans, asset, error, link) to COSMIC_ALERT_WEBHOOK_URL.",
    )
    def run_failure_alerts(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        instance = context.instance
        if webhook_url is None:
            return dg.SensorResult(
                skip_reason="COSMIC_ALERT_WEBHOOK_URL is not set: failed runs are not posted anywhere",
                cursor=_latest_failure(instance),
            )
        if context.cursor is None or not context.cursor.lstrip("-").isdigit():
            return dg.SensorResult(
                skip_reason="started: posting runs that fail from now on", cursor=_latest_failure(instance)
            )
        cursor = int(context.cursor)
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(dg.DagsterEventType.RUN_FAILURE, after_storage_id=cursor),
            limit=FETCH_LIMIT,
            ascending=True,
        ).records
        run_ids = list({r.event_log_entry.run_id for r in records})
        runs = {
            r.dagster_run.run_id: r.dagster_run
            for r in (instance.get_run_records(dg.RunsFilter(run_ids=run_ids)) if run_ids else [])
        }
        posted: list[str] = []
        deadline = time.monotonic() + TICK_BUDGET_S
        for index, record in enumerate(records):
            if time.monotonic() > deadline:
                break
            run = runs.get(record.event_log_entry.run_id)
            if run is not None and _in_this_location(context, run):
                try:
                    post_alert(webhook_url, build_alert(_failed_run(instance, run, record), ui_url))
                except AlertDeliveryError as exc:
                    waiting = f"{len(records) - index} run failure(s) wait for the next tick"
                    context.log.warning(f"alert for failed run {run.run_id} not delivered: {exc}; {waiting}")
                    if not posted:
                        raise AlertDeliveryError(f"{exc}; {waiting}") from None
                    return dg.SensorResult(
                        skip_reason=f"posted {len(posted)} alert(s), then: {exc}; {waiting}",
                        cursor=str(cursor),
                    )
                context.log.info(f"alert posted for failed run {run.run_id}")
                posted.append(run.run_id)
            cursor = record.storage_id
        summary = f"posted alerts for failed runs {', '.join(posted)}" if posted else "no new failed runs"
        return dg.SensorResult(skip_reason=summary, cursor=str(cursor))

    return run_failure_alerts
