"""Who launched a run, and the status table, without a server."""

from cosmic_dagster import names
from cosmic_dagster.cli.scan_view import ScanRow, check_state, format_table
from cosmic_dagster.domain.launches import launched_by


def test_launched_by_reads_our_tag_then_dagsters_and_defaults_to_the_ui():
    assert launched_by({names.TAG_SUBMITTED_BY: names.BY_WATCHER}) == "watcher"
    assert launched_by({names.TAG_SENSOR_NAME: names.ARRIVAL_SENSOR}) == "sensor"
    assert launched_by({names.TAG_SCHEDULE_NAME: names.FLIGHT_SCHEDULE}) == "schedule"
    assert launched_by({names.TAG_PARTITION: "NS_261124001_ccdframes_0_0"}) == "ui"
    assert launched_by({names.TAG_SUBMITTED_BY: "watch"}) == "watch"  # older runs: shown as they are


def test_status_table_has_one_aligned_row_per_scan_and_a_summary():
    rows = [
        ScanRow(
            "NS_261124001_ccdframes_0_0", "detected", "failed", "raw_scan: truncated " + "x" * 200, 1.8e9
        ),
        ScanRow("NS_261124002_ccdframes_0_0", "reconstructed", "done", when=1.8e9),
        ScanRow("NS_261124003_ccdframes_0_0", "detected", "waiting"),
    ]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["scan", "stage", "state", "when", "reason"]
    states = zip(lines[:4], ("state", "failed", "done", "waiting"), strict=True)
    assert len({line.index(f" {state} ") for line, state in states}) == 1  # the columns line up
    assert lines[1].endswith("…") and len(lines[1]) < 160  # long reasons are clipped
    assert lines[3].split()[1:4] == ["detected", "waiting", "-"]
    assert lines[-1] == "3 scan(s): 1 done, 1 failed, 1 waiting"


def test_a_check_failed_at_warn_severity_reads_as_a_warning():
    """A doubtful reconstruction's quality check blocks nothing: ``show`` must not call it failed."""
    assert check_state({"status": "FAILED", "severity": "WARN"}) == "WARNED"
    assert check_state({"status": "FAILED", "severity": "ERROR"}) == "FAILED"
    assert check_state({"status": "SUCCEEDED", "severity": "ERROR"}) == "SUCCEEDED"
