"""The arrival sensor: new complete scans -> partitions -> batched runs.

Each tick walks only the recent day folders (cost flat in archive size), emits at most
``max_scans_per_tick`` scans, and packs scans found together into runs of up to
``max_scans_per_run`` (one partition range each, contiguous because they are added in the same
request). The cursor and the run keys make a restarted daemon neither miss nor repeat a scan.
"""

import hashlib
import time

import dagster as dg

from cosmic_dagster import names
from cosmic_dagster.defs.assets import RAW
from cosmic_dagster.defs.partitions import scans
from cosmic_dagster.defs.resources import ArrivalsResource, StateResource
from cosmic_dagster.domain.arrivals import Cursor, discover
from cosmic_dagster.domain.launches import launched_by
from cosmic_dagster.domain.quarantine import Quarantine
from cosmic_dagster.domain.scans import scan_key


def _batch_run_key(keys: list[str]) -> str:
    return "scans-" + hashlib.sha256("\n".join(keys).encode()).hexdigest()[:16]


def _already_launched(instance: dg.DagsterInstance, runs_by_key: dict[str, str]) -> str:
    """Why this tick requested no run: who launched the new scans, and where to find their runs."""
    run_ids = sorted(set(runs_by_key.values()))
    records = instance.get_run_records(dg.RunsFilter(run_ids=run_ids))
    by = sorted({launched_by(r.dagster_run.tags) for r in records}) or ["an unknown launcher"]
    return (
        f"{len(runs_by_key)} new scan(s) already launched by {' and '.join(by)} in run(s) "
        f"{', '.join(r[:8] for r in run_ids)}: nothing to request (this sensor launches only "
        f"scans nobody launched; their runs are under Runs, tag {names.TAG_SUBMITTED_BY})"
    )


def build_arrival_sensor(interval_s: int) -> dg.SensorDefinition:
    @dg.sensor(
        name=names.ARRIVAL_SENSOR,
        job_name=names.SCAN_JOB,
        minimum_interval_seconds=interval_s,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description=(
            "Registers complete new COSMIC scans as partitions and runs them in batches. With "
            "`cosmic-dagster watch` running, the watcher launches new scans first: this sensor's "
            "ticks then request 0 runs and say who launched the scans (Runs, tag "
            f"{names.TAG_SUBMITTED_BY}); it launches only what nobody else did."
        ),
    )
    def scan_arrival_sensor(
        context: dg.SensorEvaluationContext, arrivals: ArrivalsResource, state: StateResource
    ) -> dg.SensorResult | dg.SkipReason:
        found = discover(
            arrivals.lister(),
            Cursor.load(context.cursor),
            now=time.time(),
            recent_days=arrivals.recent_days,
            settle_seconds=arrivals.settle_seconds + arrivals.watch_grace_seconds,
            max_per_tick=arrivals.max_scans_per_tick,
            accept=arrivals.rejection,
        )
        if found.rejections:
            quarantine = Quarantine(state.ledger())
            for rejection in found.rejections:
                context.log.warning(f"not registering {rejection.relpath}: {rejection.reason}")
                quarantine.add(rejection.relpath, "sensor", rejection.reason)
        if not found.arrivals:
            context.update_cursor(found.cursor.dump())
            return dg.SkipReason(f"no new complete scans ({found.pending} settling or waiting)")
        # A scan launched by the watcher or by hand (cosmic-dagster submit) already has a run.
        # Only a planned run counts: a partition added by a daemon that died before launching
        # its run must still be launched now.
        launched: dict[str, str] = {}  # scan key -> the run that already has it
        keys = []
        for key in (scan_key(a.relpath) for a in found.arrivals):
            planned = context.instance.get_latest_planned_materialization_info(RAW, partition=key)
            if planned is None:
                keys.append(key)
            else:
                launched[key] = planned.run_id
        if not keys:
            context.update_cursor(found.cursor.dump())
            return dg.SkipReason(_already_launched(context.instance, launched))
        size = arrivals.max_scans_per_run
        batches = [keys[i : i + size] for i in range(0, len(keys), size)]
        context.log.info(f"{len(keys)} new scans in {len(batches)} run(s); {found.pending} still pending")
        return dg.SensorResult(
            dynamic_partitions_requests=[scans.build_add_request(keys)],
            run_requests=[
                dg.RunRequest(
                    run_key=_batch_run_key(batch),
                    tags={
                        names.TAG_RANGE_START: batch[0],
                        names.TAG_RANGE_END: batch[-1],
                        names.TAG_SCANS: str(len(batch)),
                        names.TAG_SUBMITTED_BY: names.BY_SENSOR,
                    },
                )
                for batch in batches
            ],
            cursor=found.cursor.dump(),
        )

    return scan_arrival_sensor
