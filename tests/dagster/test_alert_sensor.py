"""The failure alert sensor against real failed runs and a real webhook on 127.0.0.1.

``Ticks`` evaluates the sensor as the daemon does (``SensorDefinition.evaluate_tick``, the call the
code server makes) and keeps the cursor the way the daemon keeps it: a tick that raises fails and
saves nothing, any other tick saves the cursor it returned.
"""

from __future__ import annotations

import dataclasses
import logging
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from cosmic_dagster import names
from cosmic_dagster.config import Settings
from cosmic_dagster.definitions import build_definitions
from cosmic_dagster.domain.alerts import AlertDeliveryError
from cosmic_dagster.domain.scans import scan_key
from tests.webhook_receiver import TOKEN, Receiver

UI = "http://cosmic.test:3000"


class Ticks:
    def __init__(self, sensor: dg.SensorDefinition, instance: dg.DagsterInstance, cursor: str | None = None):
        self.sensor, self.instance, self.cursor = sensor, instance, cursor

    def tick(self) -> Any:
        """The tick's SensorExecutionData, or the exception that failed it."""
        try:
            context = dg.build_sensor_context(instance=self.instance, cursor=self.cursor)
            data = self.sensor.evaluate_tick(context)
        except Exception as exc:
            return exc
        self.cursor = data.cursor
        return data


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


@pytest.fixture
def instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    with dg.instance_for_test(temp_dir=str(home)) as instance:
        yield instance


def alert_ticks(
    settings: Settings, instance: dg.DagsterInstance, url: str | None, cursor: str | None = None
) -> Ticks:
    defs = build_definitions(dataclasses.replace(settings, alert_webhook_url=url, ui_url=UI))
    return Ticks(defs.resolve_sensor_def(names.ALERT_SENSOR), instance, cursor)


def failed_batch(settings: Settings, instance: dg.DagsterInstance, keys: list[str]) -> str:
    instance.add_dynamic_partitions("scans", keys)
    result = (
        build_definitions(settings)
        .resolve_job_def("scan_job")
        .execute_in_process(
            instance=instance,
            tags={
                "dagster/asset_partition_range_start": keys[0],
                "dagster/asset_partition_range_end": keys[-1],
            },
            raise_on_error=False,
        )
    )
    assert not result.success
    return result.run_id


def crashed_run(settings: Settings, instance: dg.DagsterInstance, key: str) -> str:
    """A run failed by run monitoring (its worker died): no step failure, no per-scan reasons."""
    instance.add_dynamic_partitions("scans", [key])
    job = build_definitions(settings).resolve_job_def("scan_job")
    run = instance.create_run_for_job(job, tags={"dagster/partition": key})
    instance.report_run_failed(run, "Detected run worker status FAILED: worker 4242 is gone.")
    return run.run_id


def test_a_failed_batch_is_posted_once_with_scan_asset_error_and_link(settings, beamline, instance, receiver):
    ticks = alert_ticks(settings, instance, receiver.url)
    started = ticks.tick()
    assert "from now on" in started.skip_message and receiver.requests == []
    good, bad = scan_key(beamline.scan()), scan_key(beamline.defect("truncated"))
    run_id = failed_batch(settings, instance, [good, bad])

    posted = ticks.tick()
    [alert] = receiver.delivered
    assert run_id in posted.skip_message
    link = f"{UI}/runs/{run_id}"
    assert alert["run_id"] == run_id and alert["job"] == "scan_job" and alert["link"] == link
    [scan] = alert["scans"]
    assert scan["scan"] == bad and scan["asset"] == "raw_scan" and "truncated" in scan["error"].lower()
    assert alert["scan_range"] == [good, bad]
    assert bad in alert["text"] and "raw_scan" in alert["text"] and link in alert["text"]
    assert good not in alert["text"].split("\n", 1)[1]  # only the failed scan is listed

    assert "no new failed runs" in ticks.tick().skip_message
    assert len(receiver.requests) == 1


def test_a_run_that_failed_outside_its_step_is_reported_with_its_scans(settings, instance, receiver):
    ticks = alert_ticks(settings, instance, receiver.url)
    ticks.tick()
    key = "NS_261124009_ccdframes_0_0"
    run_id = crashed_run(settings, instance, key)
    ticks.tick()
    [alert] = receiver.delivered
    assert alert["run_id"] == run_id and alert["scans"] == [] and alert["scan_range"] == [key]
    assert alert["error"] == "Detected run worker status FAILED: worker 4242 is gone."
    assert f"(scan `{key}`)" in alert["text"] and f"{UI}/runs/{run_id}" in alert["text"]


def test_a_receiver_answering_500_then_200_gets_the_alert_once(settings, instance, receiver):
    ticks = alert_ticks(settings, instance, receiver.url)
    ticks.tick()
    run_id = crashed_run(settings, instance, "NS_261124001_ccdframes_0_0")
    receiver.answers = [500]
    ticks.tick()
    assert [status for status, _, _ in receiver.requests] == [500, 200]
    assert [a["run_id"] for a in receiver.delivered] == [run_id]
    ticks.tick()
    assert len(receiver.requests) == 2


def test_a_webhook_that_is_down_fails_the_tick_and_loses_nothing(settings, instance, receiver, caplog, capfd):
    caplog.set_level(logging.INFO)
    down = Receiver()
    down.stop()  # nothing listens on its port any more
    ticks = alert_ticks(settings, instance, down.url)
    ticks.tick()
    run_id = crashed_run(settings, instance, "NS_261124001_ccdframes_0_0")
    cursor = ticks.cursor

    for _ in range(2):  # as often as it stays down
        failed = ticks.tick()
        assert isinstance(failed, AlertDeliveryError) and ticks.cursor == cursor
        assert "cannot connect" in str(failed) and "1 run failure(s) wait for the next tick" in str(failed)
    logged = capfd.readouterr().err + caplog.text
    assert f"WARNING - alert for failed run {run_id} not delivered: webhook did not take the alert" in logged
    shown = logged + "".join(traceback.format_exception(failed))
    assert TOKEN not in shown and down.url.split("/")[2] not in shown

    ticks = alert_ticks(settings, instance, receiver.url, cursor=ticks.cursor)  # back up
    ticks.tick()
    ticks.tick()
    assert [a["run_id"] for a in receiver.delivered] == [run_id]


def test_a_webhook_failing_midway_keeps_what_was_posted(settings, instance, receiver):
    ticks = alert_ticks(settings, instance, receiver.url)
    ticks.tick()
    first = crashed_run(settings, instance, "NS_261124001_ccdframes_0_0")
    second = crashed_run(settings, instance, "NS_261124002_ccdframes_0_0")
    receiver.answers = [200, 503, 503, 503]
    partial = ticks.tick()
    assert "posted 1 alert(s), then" in partial.skip_message and "HTTP 503" in partial.skip_message
    ticks.tick()
    assert [a["run_id"] for a in receiver.delivered] == [first, second]  # each once, in order


def test_without_a_webhook_the_sensor_says_so_and_posts_no_backlog_later(settings, instance, receiver):
    ticks = alert_ticks(settings, instance, None)
    crashed_run(settings, instance, "NS_261124001_ccdframes_0_0")
    skipped = ticks.tick()
    assert "COSMIC_ALERT_WEBHOOK_URL is not set" in skipped.skip_message
    crashed_run(settings, instance, "NS_261124002_ccdframes_0_0")
    ticks.tick()
    configured = alert_ticks(settings, instance, receiver.url, cursor=ticks.cursor)
    assert "no new failed runs" in configured.tick().skip_message and receiver.requests == []
