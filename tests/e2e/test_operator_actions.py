"""Every operator action of the README, through the CLI -> GraphQL -> real daemon."""

from __future__ import annotations

import json
import subprocess
import sys

import dagster as dg
import pytest

from cosmic_dagster.compute.local.compute import LocalCompute
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.scans import scan_key

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def cli(live, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [sys.executable, "-m", "cosmic_dagster.cli.main", *args, "--url", live.services.url],
        env=live.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if check:
        assert proc.returncode == 0, proc.stderr
    return proc


def raw_materializations(live, key: str) -> int:
    records = live.instance.fetch_materializations(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey("raw_scan"), asset_partitions=[key]), limit=100
    ).records
    return len(records)


def recon_meta(live, key: str) -> dict:
    return live.progress([key])[key].metadata.get("reconstruction", {})


def test_submit_by_hand_and_refuse_paths_outside_the_root(live, tmp_path):
    relpath = "manual/" + live.beamline.relpath().rsplit("/", 1)[1]  # not in a day folder the sensor watches
    live.beamline.scan(relpath)
    out = json.loads(cli(live, "submit", str(live.settings.beamline_root / relpath)).stdout)
    assert out["scan"] == scan_key(relpath)
    live.wait_checked([out["scan"]])

    outside = tmp_path / "x.cxi"
    outside.write_bytes(b"x")
    refused = cli(live, "submit", str(outside), check=False)
    assert refused.returncode == 2 and "not under the beamline root" in refused.stderr


def test_rerun_one_failed_reconstruction_and_all_failed(live):
    keys = [scan_key(live.beamline.scan()) for _ in range(2)]
    live.wait_checked(keys)
    before = {k: recon_meta(live, k)["job_id"] for k in keys}
    # ptychocam's wrapper only exists at NERSC: locally these jobs fail, as a bad job would.
    for key in keys:
        cli(live, "recon", key, "--engine", "ptychocam")
    live.wait_for(
        "failed reconstructions",
        lambda: set(keys) <= set(live.api.partition_statuses("reconstruction")["failed"]),
    )

    cli(live, "recon", keys[0])  # one scan, routine parameters: the completed job is reused
    live.wait_for(
        "first scan healthy again",
        lambda: keys[0] not in live.api.partition_statuses("reconstruction")["failed"],
    )
    assert recon_meta(live, keys[0])["job_id"] == before[keys[0]]

    out = json.loads(cli(live, "rerun-failed").stdout)
    assert keys[1] in out["failed"] and out["backfill_id"]
    live.wait_for(
        "no failed reconstruction left",
        lambda: not set(keys) & set(live.api.partition_statuses("reconstruction")["failed"]),
    )


def test_new_parameters_for_one_run_and_backfill_a_range(live):
    keys = [scan_key(live.beamline.scan()) for _ in range(3)]
    live.wait_checked(keys)
    first_job = recon_meta(live, keys[0])["job_id"]
    cli(live, "recon", keys[0], "--iterations", "30")
    live.wait_for(
        "new reconstruction with 30 iterations",
        lambda: recon_meta(live, keys[0]).get("parameters", {}).get("iterations") == 30,
    )
    assert recon_meta(live, keys[0])["job_id"] != first_job

    counts = {k: raw_materializations(live, k) for k in keys}
    out = json.loads(cli(live, "backfill", keys[0], keys[-1], "--assets", "raw_scan").stdout)
    assert out["scans"][0] == keys[0] and out["scans"][-1] == keys[-1]

    live.wait_for("backfilled range", lambda: all(raw_materializations(live, k) > counts[k] for k in keys))


def test_terminating_a_run_cancels_its_job(live):
    key = scan_key(live.beamline.scan())
    live.wait_checked([key])
    ledger = Ledger(live.settings.state_dir / "ledger.sqlite")
    before = set(ledger.all("job"))
    run_id = json.loads(cli(live, "recon", key, "--iterations", "100000").stdout)["run_id"]
    live.wait_for("the long job to be submitted", lambda: set(ledger.all("job")) - before)
    [name] = set(ledger.all("job")) - before
    job_id = ledger.get("job", name)["job_id"]
    live.api.terminate_run(run_id)
    live.wait_for("run canceled", lambda: live.api.run_status(run_id) == "CANCELED")
    compute = LocalCompute(live.settings.state_dir / "local-jobs", ledger)
    live.wait_for("job cancelled", lambda: compute.statuses([job_id])[job_id].state == "CANCELLED")
