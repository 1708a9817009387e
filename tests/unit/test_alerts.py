"""Failed-run alerts without Dagster: parsing, concise text, payload, delivery, settings."""

from __future__ import annotations

import pytest
import requests
import responses

from cosmic_dagster.config import ConfigError, Settings
from cosmic_dagster.domain.alerts import (
    MAX_ERROR_CHARS,
    AlertDeliveryError,
    FailedRun,
    ScanFailure,
    build_alert,
    describe_failures,
    post_alert,
    run_scans,
)

UI = "http://cosmic.example:3000/"
HOOK = "https://hooks.example.org/services/T000/B000/s3cr3tT0ken"
RANGE = {
    "dagster/asset_partition_range_start": "NS_261124001_ccdframes_0_0",
    "dagster/asset_partition_range_end": "NS_261124003_ccdframes_0_0",
}


def key(n: int) -> str:
    return f"NS_261124{n:03d}_ccdframes_0_0"


def pipeline_failure(reasons: dict[str, str]) -> list[ScanFailure]:
    """What assets.scan_pipeline records in its dg.Failure's metadata ("<asset>: <reason>" here)."""
    return [ScanFailure(k, *reason.split(": ", 1)) for k, reason in reasons.items()]


def test_the_step_failure_text_names_each_scan_with_its_asset_and_reason():
    failures = pipeline_failure(
        {
            key(2): "raw_scan: NS_261124002_ccdframes_0_0.cxi: HDF5 file is truncated (2 of 3 bytes present)",
            "p.odd_-name.cxi": "reconstruction: job 17 FAILED: exit code 1\n  Traceback: out of memory",
        }
    )
    text = describe_failures(failures, total=3)
    truncated = "NS_261124002_ccdframes_0_0.cxi: HDF5 file is truncated (2 of 3 bytes present)"
    assert text.splitlines()[:2] == ["2 of 3 scans failed:", f"- {key(2)}: raw_scan: {truncated}"]
    assert "- p.odd_-name.cxi: reconstruction: job 17 FAILED: exit code 1" in text


def test_run_scans_come_from_the_partition_tags():
    assert run_scans(RANGE) == [key(1), key(3)]
    assert run_scans({"dagster/partition": key(7)}) == [key(7)]
    one = {"dagster/asset_partition_range_start": key(4), "dagster/asset_partition_range_end": key(4)}
    assert run_scans(one) == [key(4)]
    assert run_scans({}) == []


def test_the_alert_names_scan_asset_error_and_link():
    run = FailedRun(
        run_id="0123456789abcdef",
        job="scan_job",
        tags=RANGE,
        errors=[],
        scans=pipeline_failure({key(2): "nersc_copy: checksum mismatch at destination"}),
    )
    alert = build_alert(run, UI)
    link = "http://cosmic.example:3000/runs/0123456789abcdef"
    assert alert["link"] == link and alert["text"].endswith(link)
    [scan] = alert["scans"]
    assert scan == {"scan": key(2), "asset": "nersc_copy", "error": "checksum mismatch at destination"}
    assert alert["text"].splitlines() == [
        f"Run 01234567 of scan_job failed (scans `{key(1)}` … `{key(3)}`): 1 scan failed",
        f"• `{key(2)}` nersc_copy: checksum mismatch at destination",
        link,
    ]
    assert alert["run_id"] == run.run_id and alert["job"] == "scan_job" and alert["error"] is None
    assert alert["scan_range"] == [key(1), key(3)] and alert["will_retry"] is False


def test_a_long_failure_is_truncated_per_scan_and_lists_at_most_ten():
    reasons = {key(n): "reconstruction: " + "x" * 1000 for n in range(1, 16)}
    run = FailedRun("r" * 36, "scan_job", RANGE, [], pipeline_failure(reasons))
    alert = build_alert(run, UI)
    bullets = [line for line in alert["text"].splitlines() if line.startswith("•")]
    assert len(bullets) == 11 and bullets[-1] == "• …and 5 more"
    assert len(alert["scans"]) == 15  # the structured list is complete
    assert all(len(s["error"]) == MAX_ERROR_CHARS and s["error"].endswith("…") for s in alert["scans"])
    assert len(alert["text"]) < 11 * (MAX_ERROR_CHARS + 60) + 200


def test_a_run_without_scan_reasons_reports_its_error_and_scans():
    run = FailedRun(
        run_id="feedbeef-0000",
        job="scan_job",
        tags={"dagster/partition": key(5), "dagster/will_retry": "true"},
        errors=["Detected run worker status FAILED: process 4242 is gone. <!channel>\n\n  details"],
    )
    alert = build_alert(run, UI)
    first, error, _link = alert["text"].splitlines()
    assert first == f"Run feedbeef of scan_job failed (scan `{key(5)}`); Dagster retries it automatically"
    assert error == "Error: Detected run worker status FAILED: process 4242 is gone. &lt;!channel&gt; details"
    assert alert["scans"] == [] and alert["error"].startswith("Detected run worker status FAILED")
    assert alert["will_retry"] is True


@responses.activate
def test_post_retries_5xx_and_takes_the_first_2xx():
    responses.post(HOOK, status=503)
    responses.post(HOOK, status=200)
    post_alert(HOOK, {"text": "hi"}, backoff_s=0)
    assert len(responses.calls) == 2 and responses.calls[1].request.body == b'{"text": "hi"}'


@responses.activate
def test_a_rejected_alert_is_not_retried_and_the_error_hides_the_url():
    responses.post(HOOK, status=403, body=f"invalid_token for {HOOK}")
    with pytest.raises(AlertDeliveryError) as raised:
        post_alert(HOOK, {"text": "hi"}, backoff_s=0)
    assert len(responses.calls) == 1
    assert str(raised.value) == "webhook did not take the alert (HTTP 403, 1 attempt(s))"


@responses.activate
def test_an_unreachable_webhook_is_reported_without_its_url():
    responses.post(HOOK, body=requests.ConnectionError(f"Max retries exceeded with url: {HOOK}"))
    with pytest.raises(AlertDeliveryError) as raised:
        post_alert(HOOK, {"text": "hi"}, attempts=3, backoff_s=0)
    assert len(responses.calls) == 3
    assert "cannot connect (ConnectionError)" in str(raised.value) and "s3cr3t" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__context__ is None


def test_settings_validate_the_urls_and_never_show_the_webhook():
    settings = Settings.from_env({"COSMIC_ALERT_WEBHOOK_URL": HOOK, "COSMIC_UI_URL": UI})
    assert settings.alert_webhook_url == HOOK and settings.ui_url == "http://cosmic.example:3000"
    assert "s3cr3t" not in repr(settings)
    defaults = Settings.from_env({})
    assert defaults.alert_webhook_url is None and defaults.ui_url == "http://localhost:3000"
    with pytest.raises(ConfigError, match=r"COSMIC_ALERT_WEBHOOK_URL .*http") as raised:
        Settings.from_env({"COSMIC_ALERT_WEBHOOK_URL": "hooks.example.org/s3cr3tT0ken"})
    assert "s3cr3t" not in str(raised.value)
    with pytest.raises(ConfigError, match="COSMIC_UI_URL='localhost:3000' must be an http"):
        Settings.from_env({"COSMIC_UI_URL": "localhost:3000"})
