"""The Dagster code location: assets, checks, sensor, jobs and resources for one profile.

``COSMIC_PROFILE`` picks the resources (``local`` by default: no account needed); everything
else is the same code in every deployment.
"""

from __future__ import annotations

import dagster as dg

from cosmic_dagster import names
from cosmic_dagster.config import Settings
from cosmic_dagster.defs.alert_sensor import build_alert_sensor
from cosmic_dagster.defs.assets import RECON, scan_pipeline
from cosmic_dagster.defs.flight import build_flight
from cosmic_dagster.defs.profiles import resources_for
from cosmic_dagster.defs.prune import PRUNED_SPEC, build_prune_job
from cosmic_dagster.defs.reconcile import build_reconcile
from cosmic_dagster.defs.sensors import build_arrival_sensor


def build_definitions(settings: Settings) -> dg.Definitions:
    scan_job = dg.define_asset_job(
        names.SCAN_JOB,
        selection=dg.AssetSelection.assets(scan_pipeline),
        description="Register, copy and reconstruct a batch of scans (one partition range).",
    )
    reconstruction_job = dg.define_asset_job(
        names.RECON_JOB,
        selection=dg.AssetSelection.assets(RECON),
        description="Reconstruct already copied scans again (reruns, new parameters).",
    )
    prune_job, prune_schedule = build_prune_job(settings)
    reconcile_job, reconcile_schedule, reconcile_sensor = build_reconcile(settings)
    flight_job, flight_schedule = build_flight(settings.flight_cron)
    return dg.Definitions(
        assets=[scan_pipeline, PRUNED_SPEC],
        jobs=[scan_job, reconstruction_job, prune_job, reconcile_job, flight_job],
        schedules=[prune_schedule, reconcile_schedule, flight_schedule],
        sensors=[
            build_arrival_sensor(settings.sensor_interval_s),
            build_alert_sensor(settings.alert_webhook_url, settings.ui_url),
            reconcile_sensor,
        ],
        resources=resources_for(settings),
        executor=dg.in_process_executor,
    )


defs = build_definitions(Settings.from_env())
