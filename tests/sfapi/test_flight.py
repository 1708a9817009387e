"""Flight checks against the loopback NERSC site (real globus-sdk and sfapi-client), then as the
Dagster job whose failure the alert sensor posts: one alert per fault, naming the failed step."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from cosmic_dagster import names
from cosmic_dagster.config import Settings
from cosmic_dagster.definitions import build_definitions
from cosmic_dagster.defs.profiles import resources_for
from cosmic_dagster.emulators.globus.faults import CallFault
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler
from cosmic_dagster.emulators.sfapi.server import HttpFault
from cosmic_dagster.emulators.site import LoopbackSite
from cosmic_dagster.pipeline.flight import CANARY_RELPATH, FlightCheck, FlightReport
from tests.dagster.test_alert_sensor import Ticks
from tests.webhook_receiver import Receiver

UI = "http://cosmic.test:3000"


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoopbackSite]:
    site = LoopbackSite(tmp_path, SimulatedScheduler(queue_wait_s=0.1, spool_dir=tmp_path / "spool"))
    for key, value in {**site.env, "COSMIC_DATA_ROOT": str(tmp_path / "data")}.items():
        monkeypatch.setenv(key, value)  # the adapters read their credentials from the environment
    yield site
    site.stop()


def flight(trivial_job: bool = True) -> FlightReport:
    settings = Settings.from_env()
    resources = resources_for(settings)
    ledger = resources["state"].ledger()
    compute = resources["compute"]
    return FlightCheck(
        transfer=resources["transfer"].adapter(ledger),
        compute=compute.adapter(ledger),
        beamline_root=settings.beamline_root,
        recon_root=compute.recon_root,
        slurm=compute.directives(),
    ).run(trivial_job=trivial_job)


def statuses(report: FlightReport) -> dict[str, str]:
    return {step.step: step.status for step in report.steps}


def test_green_against_the_emulators(site):
    first = flight()
    assert first.ok, first.failure_text()
    assert set(statuses(first).values()) == {"passed"}
    copy = next(s for s in first.steps if s.step == "canary_copy")
    assert copy.links["globus_task"].startswith("https://app.globus.org/activity/")
    canary = (site.nersc / "cfs" / "7012" / CANARY_RELPATH).read_bytes()
    assert canary == (site.beamline / CANARY_RELPATH).read_bytes()
    assert len(site.sfapi.jobs()) == 1
    second = flight(trivial_job=False)  # fresh content: copied again, never "already there"
    assert second.ok and statuses(second)["trivial_job"] == "skipped"
    assert (site.nersc / "cfs" / "7012" / CANARY_RELPATH).read_bytes() != canary
    assert len(site.globus.tasks()) == 2


@pytest.mark.slow  # globus-sdk's own retries take ~20 s before "Globus down" is reported
@pytest.mark.parametrize(
    ("fault", "step", "words"),
    [
        ("globus down", "collections", "HTTP 503"),
        ("sfapi 5xx", "compute_status", "cannot reach NERSC SFAPI"),
        ("machine down", "compute_status", "perlmutter is unavailable"),
    ],
)
def test_each_fault_fails_its_step_and_posts_one_alert_naming_it(site, tmp_path, fault, step, words):
    if fault == "globus down":
        site.globus.faults.add(CallFault(call="*", status=503, times=None))
    elif fault == "sfapi 5xx":
        site.sfapi.set_faults(http_errors=[HttpFault(503, count=1000, route="status")])
    else:
        site.sfapi.set_faults(machine_status="unavailable")
    receiver = Receiver()
    home = tmp_path / "dagster_home"
    home.mkdir()
    try:
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            settings = dataclasses.replace(Settings.from_env(), alert_webhook_url=receiver.url, ui_url=UI)
            defs = build_definitions(settings)
            ticks = Ticks(defs.resolve_sensor_def(names.ALERT_SENSOR), instance)
            ticks.tick()  # started: posts failures from now on
            result = defs.resolve_job_def(names.FLIGHT_JOB).execute_in_process(
                instance=instance,
                run_config={"ops": {names.FLIGHT_OP: {"config": {"trivial_job": True}}}},
                raise_on_error=False,
            )
            assert not result.success
            failure = result.failure_data_for_node(names.FLIGHT_OP).user_failure_data
            assert failure.metadata["failed_steps"].value == [step]
            ticks.tick()
            ticks.tick()  # nothing more to post
    finally:
        receiver.stop()
    [alert] = receiver.delivered
    assert alert["job"] == names.FLIGHT_JOB and alert["run_id"] == result.run_id
    assert f"flight check step {step} failed" in alert["text"] and words in alert["text"]
