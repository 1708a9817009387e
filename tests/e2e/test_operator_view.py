"""The operator's view of one scan, tried as a new user would: ``cosmic-dagster status`` and
``show`` against a real daemon and webserver, then the UI in headless Chromium (Debian's): the
scan's partition, the run that failed it, and the reason."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from playwright.sync_api import Browser, Page, expect

from cosmic_dagster import names
from cosmic_dagster.cli.dagster_api import LOCATION, REPOSITORY
from cosmic_dagster.cli.main import main
from cosmic_dagster.domain.scans import scan_key
from tests.e2e.conftest import LiveInstance
from tests.e2e.test_deployment_ui import TIMEOUT_MS, browser, see  # noqa: F401 - browser is a fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@dataclass
class Scans:
    live: LiveInstance
    good: str
    bad: str


@pytest.fixture(scope="module")
def scans(live: LiveInstance) -> Scans:
    bad = scan_key(live.beamline.defect("truncated"))
    good = scan_key(live.beamline.scan())
    live.wait_checked([good])
    live.wait_for(
        "the broken scan failed", lambda: bad in live.api.partition_statuses(names.RAW_SCAN)["failed"]
    )
    live.api.execute("mutation { setNuxSeen }")  # the "Join the community" dialog, once per home
    return Scans(live, good, bad)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    capsys.readouterr()
    assert main([*args]) == 0
    return capsys.readouterr().out


def test_status_table_and_json_agree_with_the_ui(scans, capsys):
    url = scans.live.services.url
    table = cli(capsys, "status", "--url", url)
    rows = {line.split()[0]: line for line in table.splitlines()[1:] if line.strip()}
    assert rows[scans.good].split()[1:3] == ["reconstructed", "done"]
    assert rows[scans.bad].split()[1:3] == ["detected", "failed"]
    assert "raw_scan:" in rows[scans.bad] and "truncated" in rows[scans.bad].lower()
    assert "2 scan(s): 1 done, 1 failed" in table
    statuses = json.loads(cli(capsys, "status", "--json", "--url", url))
    for asset in names.PIPELINE_ASSETS:  # as the UI counts: a failed scan is not also missing
        assert scans.bad in statuses[asset]["failed"] and statuses[asset]["missing"] == []


def test_show_one_scan_by_key_and_by_path(scans, capsys):
    url = scans.live.services.url
    good = json.loads(cli(capsys, "show", scans.good, "--json", "--url", url))
    assert {s["state"] for s in good["stages"].values()} == {"materialized"}
    assert good["checks"][names.QUALITY_CHECK]["status"] == "SUCCEEDED"
    assert good["parameters"]["engine"] == "epie" and good["parameters"]["iterations"] == 100
    assert good["preview_path"].endswith(".png")
    runs = good["runs"]  # its batch run (and Dagster's retry of it, had the batch failed)
    assert runs and {r["launched_by"] for r in runs} == {names.BY_SENSOR}, runs
    assert all(r["link"] == f"{url}/runs/{r['run_id']}" for r in runs)

    path = scans.live.beamline.root / good["file"]
    root = str(scans.live.beamline.root)
    assert cli(capsys, "show", str(path), "--root", root, "--url", url).startswith(f"scan {scans.good}")

    bad = cli(capsys, "show", scans.bad, "--url", url)
    assert "raw_scan        failed" in bad and "reason: raw_scan:" in bad and "truncated" in bad.lower()
    assert main(["show", "NS_000000000_missing", "--url", url]) == 2


@pytest.fixture
def page(browser: Browser, scans: Scans) -> Iterator[Page]:  # noqa: F811 - the imported fixture
    context = browser.new_context(viewport={"width": 1400, "height": 900}, base_url=scans.live.services.url)
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def test_ui_from_the_scan_partition_to_its_run_and_failure_reason(page, scans):
    [failed_run] = [r.run_id for r in scans.live.instance.get_runs() if r.status.value == "FAILURE"]
    page.goto(f"/assets/{names.RAW_SCAN}?view=partitions&partition={scans.bad}")
    see(page.get_by_text("failed, and did not materialize this asset."))
    link = page.locator(f"a[href*='/runs/{failed_run}']").first
    see(link)
    link.click()
    expect(page).to_have_url(f"{scans.live.services.url}/runs/{failed_run}", timeout=TIMEOUT_MS)
    see(page.get_by_text(f"- {scans.bad}: raw_scan:", exact=False).first)
    # A batch run names all its scans in its log, and says who launched it in its tags.
    see(page.get_by_text(re.compile(rf"scan\(s\) in this run: .*{scans.bad}")).first)
    page.get_by_role("button", name="View tags and config").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text(names.TAG_SUBMITTED_BY, timeout=TIMEOUT_MS)
    expect(dialog).to_contain_text(names.BY_SENSOR, timeout=TIMEOUT_MS)


def test_flight_check_is_scheduled_and_runs_through_the_daemon(scans):
    api = scans.live.api
    schedule = api.execute(
        """query($s: ScheduleSelector!) { scheduleOrError(scheduleSelector: $s) { __typename
            ... on Schedule { cronSchedule scheduleState { status } } } }""",
        {
            "s": {
                "repositoryLocationName": LOCATION,
                "repositoryName": REPOSITORY,
                "scheduleName": names.FLIGHT_SCHEDULE,
            }
        },
    )["scheduleOrError"]
    assert schedule["cronSchedule"] == "0 */12 * * *" and schedule["scheduleState"]["status"] == "RUNNING"
    config = {"ops": {names.FLIGHT_OP: {"config": {"trivial_job": True}}}}
    run_id = api.launch_run(names.FLIGHT_JOB, partition_key=None, run_config=config)
    scans.live.wait_for("the flight check", lambda: api.run_status(run_id) in ("SUCCESS", "FAILURE"))
    assert api.run_status(run_id) == "SUCCESS"


def test_ui_launchpad_of_the_flight_check_job(page):
    """The README's path: Jobs → flight_check_job → Launchpad (an op job has one)."""
    page.goto(f"/locations/{LOCATION}/jobs/{names.FLIGHT_JOB}/playground")
    see(page.get_by_role("button", name="Launch Run"))
