"""The ``nersc`` and ``slurm`` profiles through the real daemon: real globus-sdk and sfapi-client
against the loopback emulators, jobs run by the simulated scheduler or a real local Slurm."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.emulators.sfapi.local_slurm import SlurmScheduler
from cosmic_dagster.emulators.sfapi.scheduler import SimulatedScheduler
from tests.e2e.conftest import LiveInstance, start_live_instance
from tests.e2e.nersc_site import GLOBUS_SECRET, Site, scan_tasks, secret_free

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    site = Site(tmp_path, SimulatedScheduler(queue_wait_s=0.5, spool_dir=tmp_path / "spool"))
    yield site
    site.stop()


def run_scans(
    site: Site, extra_env: dict[str, str] | None = None, n: int = 2
) -> tuple[LiveInstance, list[str]]:
    live = start_live_instance(site.base, {**site.env, **(extra_env or {})})
    try:
        keys = [scan_key(live.beamline.scan()) for _ in range(n)]
        progress = live.wait_checked(keys, timeout_s=240)
        assert all(p.passed for p in progress.values()), progress
    except BaseException:
        live.services.stop()
        raise
    return live, keys


def test_globus_copy_and_sfapi_jobs_end_to_end(site):
    live, keys = run_scans(site)
    try:
        for progress in live.progress(keys).values():
            copy, recon = progress.metadata["nersc_copy"], progress.metadata["reconstruction"]
            assert copy["globus_task"].startswith("https://app.globus.org/activity/")
            assert copy["destination"].startswith(str(site.nersc / "cfs" / "7012"))
            assert recon["job"].startswith("https://") and recon["state"] == "COMPLETED"
            assert os.path.exists(recon["preview_path"])  # fetched back through SFAPI download
        assert len(scan_tasks(site)) <= len(keys)  # scans of one run share one task
        assert len(site.sfapi.jobs()) == len(keys)
        secret_free(live, [GLOBUS_SECRET, site.private_pem.splitlines()[1]])
    finally:
        live.services.stop()


def test_arrivals_by_listing_the_globus_collection(site):
    live, keys = run_scans(site, {"COSMIC_ARRIVALS": "globus"})
    try:
        raw = live.progress(keys)[keys[0]].metadata["raw_scan"]
        assert "no local access" in raw["validated"]
        assert Ledger(live.settings.state_dir / "ledger.sqlite").get("registration", keys[0])["bytes"] > 0
    finally:
        live.services.stop()


@pytest.mark.slurm
def test_sfapi_on_a_real_local_slurm(tmp_path, slurm_cluster):
    site = Site(tmp_path, SlurmScheduler())
    names = ("ACCOUNT", "QOS", "CPU_CONSTRAINT", "GPU_CONSTRAINT")
    directives = {f"COSMIC_SLURM_{k}": "none" for k in names}
    try:
        live, keys = run_scans(site, {**directives, "COSMIC_SLURM_TIME": "00:10:00"})
        live.services.stop()
    finally:
        site.stop()
    assert len(site.sfapi.jobs()) == len(keys)


@pytest.mark.slurm
def test_slurm_profile_with_the_direct_adapter(tmp_path, slurm_cluster):
    env = {"COSMIC_PROFILE": "slurm", "COSMIC_POLL_INTERVAL_S": "0.5"}
    live = start_live_instance(tmp_path, env)
    try:
        keys = [scan_key(live.beamline.scan()) for _ in range(2)]
        progress = live.wait_checked(keys, timeout_s=240)
        assert all(p.passed for p in progress.values())
        assert all(p.metadata["reconstruction"]["job_id"].isdigit() for p in progress.values())
    finally:
        live.services.stop()
