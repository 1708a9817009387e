"""Names that Dagster definitions, the operator's tools and the alerts must spell alike.

A job, asset, check or tag name is part of the wire between the code server, the webserver's
GraphQL API, the watcher and stored run records: renaming one here renames it everywhere, and
changing one orphans the runs and materializations recorded under the old name.
"""

PARTITIONS = "scans"

RAW_SCAN = "raw_scan"
NERSC_COPY = "nersc_copy"
RECONSTRUCTION = "reconstruction"
PIPELINE_ASSETS = (RAW_SCAN, NERSC_COPY, RECONSTRUCTION)
SCAN_STEP = "scan_pipeline"

COPY_CHECK = "copy_checksum_matches_source"
QUALITY_CHECK = "reconstruction_quality"

SCAN_JOB = "scan_job"
RECON_JOB = "reconstruction_job"

FLIGHT_JOB = "flight_check_job"
FLIGHT_OP = "flight_check"
FLIGHT_SCHEDULE = "flight_check_schedule"

ARRIVAL_SENSOR = "scan_arrival_sensor"
ALERT_SENSOR = "run_failure_alerts"

# Metadata of the pipeline step's failure: the failed scans as structured data, for the alerts.
META_SCAN_FAILURES = "scan_failures"

# Dagster's own run tags that our code reads or writes.
TAG_PARTITION = "dagster/partition"
TAG_RANGE_START = "dagster/asset_partition_range_start"
TAG_RANGE_END = "dagster/asset_partition_range_end"
TAG_WILL_RETRY = "dagster/will_retry"
TAG_PARENT_RUN = "dagster/parent_run_id"
TAG_SENSOR_NAME = "dagster/sensor_name"
TAG_SCHEDULE_NAME = "dagster/schedule_name"

# Our run tags.
TAG_SCANS = "cosmic/scans"
TAG_SUBMITTED_BY = "cosmic/submitted-by"  # who launched the run: one of LAUNCHERS
TAG_ACTION = "cosmic/action"
TAG_WATCH_SEGMENT = "cosmic/watch-segment"
TAG_WORKER_PID = "cosmic/run_worker_pid"
TAG_WORKER_START = "cosmic/run_worker_start"
TAG_WORKER_HOST = "cosmic/run_worker_host"

# Pruning of beamline copies and reconciliation of missed scans.
BEAMLINE_PRUNED = "beamline_pruned"
PRUNE_JOB = "prune_job"
PRUNE_OP = "prune_beamline_copies"
PRUNE_SCHEDULE = "prune_schedule"
RECONCILE_JOB = "reconcile_job"
RECONCILE_OP = "reconcile_scans"
RECONCILE_SCHEDULE = "reconcile_schedule"
RECONCILE_SENSOR = "reconcile_launcher"

# Values of TAG_SUBMITTED_BY. Runs launched in the UI cannot be tagged by us: a run without the tag
# counts as launched from the UI (see cosmic_dagster.domain.launches).
BY_WATCHER = "watcher"
BY_SENSOR = "sensor"
BY_RECONCILE = "reconcile"
BY_CLI = "cli"
BY_UI = "ui"
BY_SCHEDULE = "schedule"
LAUNCHERS = (BY_WATCHER, BY_SENSOR, BY_RECONCILE, BY_CLI, BY_UI, BY_SCHEDULE)
