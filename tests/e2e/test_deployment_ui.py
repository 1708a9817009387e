"""The Dagster UI of the production shape as an operator sees it: headless Chromium (Debian's,
driven by Playwright) against the webserver of a deployment (PostgreSQL, code server, daemon)
with the ``nersc`` profile, after three good scans and one broken one went through.

Every test leaves a screenshot of what it checked in the artifacts directory
(``$COSMIC_TEST_ARTIFACTS/ui``, default ``test-artifacts/ui``; the run prints the path).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Locator, Page, expect, sync_playwright

from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler
from tests.e2e.conftest import LiveInstance, start_deployed_instance
from tests.e2e.nersc_site import Site

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.postgres]

ASSETS = ("raw_scan", "nersc_copy", "reconstruction")
#: Generous for a loaded 2-core CI runner: the UI fetches everything over GraphQL after load.
TIMEOUT_MS = 30_000


@dataclass
class Deployment:
    live: LiveInstance
    good: list[str]
    bad: str


def see(locator: Locator) -> None:
    expect(locator).to_be_visible(timeout=TIMEOUT_MS)


def snap(page: Page, path: Path) -> None:
    """A screenshot once the page stopped fetching (the navigation, for one, loads late)."""
    page.wait_for_load_state("networkidle")
    page.screenshot(path=path)


@pytest.fixture(scope="module")
def artifacts(request: pytest.FixtureRequest) -> Iterator[Path]:
    root = Path(
        os.environ.get("COSMIC_TEST_ARTIFACTS") or Path(__file__).resolve().parents[2] / "test-artifacts"
    )
    directory = root / "ui"
    directory.mkdir(parents=True, exist_ok=True)
    yield directory
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    with capture.global_and_fixture_disabled() if capture else contextlib.nullcontext():
        print(f"\nUI screenshots: {directory}")  # in the CI log, pass or fail


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Debian's chromium, never a downloaded one (CI reaches only package registries)."""
    executable = shutil.which("chromium")
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium not installed")
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=executable, args=["--no-sandbox"], headless=True)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    base = tmp_path_factory.mktemp("ui")
    site = Site(base, SimulatedScheduler(queue_wait_s=0.5, spool_dir=base / "spool"))
    try:
        # Scans registered within a second of arriving (default 5 s): a shorter test.
        live = start_deployed_instance(base, {**site.env, "COSMIC_SENSOR_INTERVAL_S": "1"})
    except BaseException:
        site.stop()
        raise
    try:
        # The broken scan first: a node of the asset graph shows the latest execution of its
        # check over all scans, and a check planned in a failed run counts as failed there.
        bad = scan_key(live.beamline.defect("truncated"))
        live.wait_for(
            "the broken scan failed", lambda: bad in live.api.partition_statuses(ASSETS[-1])["failed"]
        )
        good = [scan_key(live.beamline.scan()) for _ in range(3)]
        live.wait_checked(good, timeout_s=240)
        # What clicking "Skip" on the "Join the Dagster community" dialog does: the webserver
        # shows it once per DAGSTER_HOME to browsers on localhost, over every page.
        live.api.execute("mutation { setNuxSeen }")
        yield Deployment(live, good, bad)
    finally:
        live.stop()
        site.stop()


@pytest.fixture
def page(browser: Browser, deployment: Deployment) -> Iterator[Page]:
    """A fresh tab per test, the size of the README screenshots."""
    context = browser.new_context(
        viewport={"width": 1400, "height": 900}, base_url=deployment.live.services.url
    )
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def test_asset_graph_shows_the_chain_with_checks_and_partitions(page, deployment, artifacts):
    """The lineage an operator reads left to right, each node with its checks and partitions."""
    page.goto("/asset-groups/cosmic")
    nodes = [page.locator("foreignObject").filter(has=page.get_by_text(a, exact=True)) for a in ASSETS]
    for node in nodes:
        expect(node).to_contain_text("75% filled (1 failed)", timeout=TIMEOUT_MS)
        expect(node).to_contain_text("4 partitions", timeout=TIMEOUT_MS)
    for node in nodes[1:]:  # raw_scan has no check
        expect(node).to_contain_text("1 / 1 Passed", timeout=TIMEOUT_MS)
    boxes = [node.bounding_box() for node in nodes]
    assert all(boxes)
    xs = [box["x"] for box in boxes if box]
    assert xs == sorted(xs), f"not laid out raw_scan -> nersc_copy -> reconstruction: {xs}"
    snap(page, artifacts / "asset-graph.png")


def test_partitions_view_shows_which_scans_failed(page, deployment, artifacts):
    """Where an operator finds the broken scan: its partition, the failed run, and a filter."""
    page.goto(f"/assets/reconstruction?view=partitions&partition={deployment.bad}")
    for status in ("Failed (1)", "Materialized (3)"):  # the filters count the partitions
        expect(page.get_by_role("checkbox", name=status)).to_be_checked(timeout=TIMEOUT_MS)
    for key in deployment.good:
        see(page.get_by_title(key))
    see(page.get_by_text("failed, and did not materialize this asset."))
    snap(page, artifacts / "partitions.png")

    page.get_by_text("Materialized (3)", exact=True).click()  # the box itself is a hidden <input>
    expect(page.get_by_role("checkbox", name="Materialized (3)")).not_to_be_checked()
    for key in deployment.good:
        expect(page.get_by_title(key)).to_have_count(0, timeout=TIMEOUT_MS)
    see(page.get_by_text("1 Partitions Selected"))
    see(page.get_by_title(deployment.bad).first)
    snap(page, artifacts / "partitions-failed.png")


def test_reconstruction_metadata_shows_the_job_link_and_the_preview(page, deployment, artifacts):
    """One scan's reconstruction: its figures, a link to the Slurm job, the preview image."""
    key = deployment.good[0]
    job_url = deployment.live.progress([key])[key].metadata["reconstruction"]["job"]
    assert job_url.startswith("https://iris.nersc.gov/jobs/")
    page.goto(f"/assets/reconstruction?view=partitions&partition={key}")
    see(page.get_by_text("COMPLETED", exact=True))
    see(page.get_by_text("fourier_error_drop", exact=True))
    job = page.get_by_role("link", name=job_url, exact=True)
    expect(job).to_have_attribute("href", job_url, timeout=TIMEOUT_MS)
    job.scroll_into_view_if_needed()
    snap(page, artifacts / "reconstruction-metadata.png")

    page.get_by_text("[Show Markdown]").click()
    preview = page.get_by_role("dialog").get_by_role("img", name="preview")
    see(preview)
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=preview.element_handle())
    assert preview.evaluate("img => img.naturalWidth") == 512  # the PNG decoded, as the job wrote it
    snap(page, artifacts / "reconstruction-preview.png")


def test_nersc_copy_metadata_links_the_globus_task(page, deployment, artifacts):
    """One scan's copy to NERSC links its Globus task (where a slow transfer is diagnosed)."""
    key = deployment.good[0]
    task_url = deployment.live.progress([key])[key].metadata["nersc_copy"]["globus_task"]
    assert task_url.startswith("https://app.globus.org/activity/")
    page.goto(f"/assets/nersc_copy?view=partitions&partition={key}")
    see(page.get_by_text("checksum_verified", exact=True))
    expect(page.get_by_role("link", name=task_url, exact=True)).to_have_attribute(
        "href", task_url, timeout=TIMEOUT_MS
    )
    snap(page, artifacts / "nersc-copy-metadata.png")
