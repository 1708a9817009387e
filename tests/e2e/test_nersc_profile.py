"""The ``nersc`` and ``slurm`` profiles through the real daemon: real globus-sdk and sfapi-client
against the loopback emulators, jobs run by the simulated scheduler or a real local Slurm."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from cosmic_dagster.emulators.globus_transfer import EmulatorServer
from cosmic_dagster.emulators.sfapi import SfapiEmulator
from cosmic_dagster.emulators.sfapi_scheduler import SimulatedScheduler, SlurmScheduler
from cosmic_dagster.ledger import Ledger
from cosmic_dagster.scans import scan_key
from tests.e2e.conftest import LiveInstance, start_live_instance

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

BEAMLINE_ID = "44ae904c-ab64-4145-a8f0-7287de38324d"
NERSC_ID = "df82346e-9a15-11ea-b3c4-0ae144191ee3"
GLOBUS_ID = "0b7f7e56-4c39-4b0e-9d1e-3b1c8d0f2a77"
GLOBUS_SECRET = "globus-SECRET-do-not-log-9f3a"
SFAPI_ID = "abcdefghijklm"


class Site:
    """Both emulators and the credentials files, as a NERSC deployment would have them."""

    def __init__(self, base: Path, scheduler: object):
        self.base = base
        self.beamline = base / "data" / "beamline"
        self.nersc = base / "nersc"
        for path in (self.beamline, self.nersc):
            path.mkdir(parents=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.private_pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode()
        public_pem = key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        secrets = base / "secrets"
        secrets.mkdir(mode=0o700)
        (secrets / "clientid.txt").write_text(SFAPI_ID)
        key_file = secrets / "priv_key.pem"
        key_file.write_text(self.private_pem)
        key_file.chmod(0o600)
        self.globus = EmulatorServer(
            {BEAMLINE_ID: self.beamline, NERSC_ID: "/"}, {GLOBUS_ID: GLOBUS_SECRET}
        ).start()
        self.sfapi = SfapiEmulator(
            client_id=SFAPI_ID, public_key_pem=public_pem, scheduler=scheduler, allowed_roots=[self.nersc]
        ).start()
        endpoints = base / "config.yml"
        endpoints.write_text(
            "globus:\n  globus_endpoints:\n"
            f"    data7012: {{root_path: /, uri: data7012.lbl.gov, uuid: {BEAMLINE_ID}}}\n"
            f"    nersc7012: {{root_path: {self.nersc}/cfs/7012, uri: nersc.gov, uuid: {NERSC_ID}}}\n"
        )
        globus_url = self.globus.url.rstrip("/") + "/"
        self.env = {
            "COSMIC_PROFILE": "nersc",
            "COSMIC_ENDPOINTS_FILE": str(endpoints),
            "COSMIC_NERSC_RECON_ROOT": str(self.nersc / "scratch" / "recon"),
            "COSMIC_JOB_PYTHON": sys.executable,
            "COSMIC_POLL_INTERVAL_S": "0.5",
            "GLOBUS_CLIENT_ID": GLOBUS_ID,
            "GLOBUS_CLIENT_SECRET": GLOBUS_SECRET,
            "GLOBUS_SDK_SERVICE_URL_TRANSFER": globus_url,
            "GLOBUS_SDK_SERVICE_URL_AUTH": globus_url,
            "PATH_NERSC_ID": str(secrets / "clientid.txt"),
            "PATH_NERSC_PRI_KEY": str(key_file),
            "SFAPI_API_BASE_URL": self.sfapi.api_base_url,
            "SFAPI_TOKEN_URL": self.sfapi.token_url,
        }

    def stop(self) -> None:
        self.sfapi.stop()
        self.globus.stop()


def secret_free(live: LiveInstance, secrets: list[str]) -> None:
    """No secret in any event (messages, metadata, errors), run tag, or log file of the instance."""
    runs = live.instance.get_runs()
    assert runs
    for run in runs:
        assert not any(s in repr(run.tags) for s in secrets)
        for record in live.instance.all_logs(run.run_id):
            text = repr(record)
            assert not any(s in text for s in secrets), f"secret leaked in run {run.run_id}"
    for root in (Path(live.env["DAGSTER_HOME"]), live.services.log_dir):
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt", ""):
                content = path.read_text(errors="replace")
                assert not any(s in content for s in secrets), f"secret leaked in {path}"


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
        tasks = site.globus.tasks()
        assert len(tasks) <= len(keys)  # scans of one run share one task
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
    directives = {f"COSMIC_SLURM_{k}": "none" for k in ("ACCOUNT", "QOS", "CONSTRAINT")}
    try:
        live, keys = run_scans(
            site, {**directives, "COSMIC_SLURM_GPUS": "0", "COSMIC_SLURM_TIME": "00:10:00"}
        )
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
