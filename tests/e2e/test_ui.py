"""What an operator sees in the Dagster UI (headless Chromium against the real webserver)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from cosmic_dagster.scans import scan_key
from tests.e2e.browser import Browser, chromium_path

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI") == "true":
            pytest.fail("chromium is required in CI (apt-get install chromium)")
        pytest.skip("chromium not installed")
    b = Browser(executable)
    yield b
    b.close()


@pytest.fixture(scope="module")
def scan(live) -> str:
    key = scan_key(live.beamline.scan())
    live.wait_checked([key])
    return key


def test_lineage_shows_the_three_assets_with_partitions_and_checks(live, browser, scan):
    browser.goto(f"{live.services.url}/asset-groups/cosmic")
    text = "document.body.innerText"
    browser.wait_for(f"['raw_scan', 'nersc_copy', 'reconstruction'].every(a => {text}.includes(a))")
    browser.wait_for(f"{text}.includes('1 / 1 Passed') || {text}.includes('Passed')")


def test_reconstruction_page_shows_metadata_and_the_preview_image(live, browser, scan):
    browser.goto(f"{live.services.url}/assets/reconstruction?partition={scan}")
    browser.wait_for("document.body.innerText.includes('COMPLETED')")
    assert browser.evaluate("document.body.innerText.includes('fourier_error_drop')")
    browser.evaluate(
        "[...document.querySelectorAll('a')].find(a => a.innerText.includes('Show Markdown')).click()"
    )
    widths = browser.wait_for(
        "[...document.querySelectorAll('img')].filter(i => i.src.startsWith('data:image/png'))"
        ".map(i => i.naturalWidth).filter(w => w > 0)",
        timeout_s=20,
    )
    assert widths == [512]  # the preview PNG decoded and rendered
