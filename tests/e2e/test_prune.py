"""Pruning through the real daemon (local profile): a mix of scans, dry run then delete, from the CLI."""

import datetime as dt
import os
import time

import dagster as dg
import pytest
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from cosmic_dagster import names
from cosmic_dagster.cli.main import main
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.quarantine import Quarantine
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.pipeline.prune import AUDIT_KIND, PRUNED
from cosmic_dagster.pipeline.stages import COPY, REGISTRATION
from tests.conftest import DAY, Beamline

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

OLD = time.time() - 40 * 86_400
SCANS = ["ok", "young", "check_failed", "quarantined", "modified", "dest_altered", "dest_missing"]
SCANS += ["symlink", "never_copied"]


def _decisions(instance, keys, observations):
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    records = fetch(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(names.BEAMLINE_PRUNED), asset_partitions=keys), limit=1000
    ).records
    out = {}
    for record in reversed(records):  # oldest first: the latest wins
        event = record.asset_observation if observations else record.asset_materialization
        out[event.partition] = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    return out


def test_prune_deletes_exactly_the_safe_scans_and_records_every_decision(live, capsys):
    root, settings = live.beamline.root, live.settings
    staging = Beamline(root.parent / "staging")  # old scans get their old mtime before the sensor sees them
    # never_copied is registered by hand only: its day folder is older than the sensor's recent ones
    # (COSMIC_RECENT_DAYS, 2: DAY's and the empty one after it), or the sensor could launch it whole
    # in the moment between its arrival and the run registering it
    earlier = Beamline(staging.root, DAY - dt.timedelta(days=40))
    (root / Beamline(root, DAY + dt.timedelta(days=1)).relpath()).parent.mkdir(parents=True)
    rel = {}
    for name in SCANS:
        if name == "young":
            relpath = live.beamline.scan(staging.relpath())
        else:
            relpath = (earlier if name == "never_copied" else staging).scan()
        if name != "young":
            os.utime(staging.root / relpath, (OLD, OLD))
            (root / relpath).parent.mkdir(parents=True, exist_ok=True)
            if name != "never_copied":
                os.rename(staging.root / relpath, root / relpath)
        rel[name] = relpath
    key = {name: scan_key(r) for name, r in rel.items()}
    processed = [key[n] for n in SCANS if n != "never_copied"]
    live.wait_checked(processed)
    os.rename(staging.root / rel["never_copied"], root / rel["never_copied"])  # registered only
    live.instance.add_dynamic_partitions(names.PARTITIONS, [key["never_copied"]])
    live.api.launch_run(names.SCAN_JOB, partition_key=key["never_copied"], asset_keys=[names.RAW_SCAN])
    live.wait_for(
        "never_copied registered",
        lambda: live.progress([key["never_copied"]])[key["never_copied"]].stage == "registered",
    )

    # What goes wrong after processing: a later failed copy check, a quarantine, a file rewritten,
    # a copy altered or lost at NERSC, a beamline file replaced by a link inside the root.
    live.instance.report_runless_asset_event(
        AssetCheckEvaluation(
            asset_key=dg.AssetKey(names.NERSC_COPY),
            check_name=names.COPY_CHECK,
            passed=False,
            partition=key["check_failed"],
            metadata={},
        )
    )
    ledger = Ledger(settings.state_dir / "ledger.sqlite")
    Quarantine(ledger).add(rel["quarantined"], "operator", "beam dump during the scan")
    with open(root / rel["modified"], "ab") as f:
        f.write(b"appended later")
    altered = settings.nersc_root / rel["dest_altered"]
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0xFF
    altered.write_bytes(bytes(data))
    (settings.nersc_root / rel["dest_missing"]).unlink()
    link = root / rel["symlink"]
    link.rename(link.with_name("moved.h5"))
    link.symlink_to(link.with_name("moved.h5"))

    cli = ["prune", "--url", live.services.url, "--retention-days", "30"]
    assert main(cli) == 0
    out = capsys.readouterr().out
    assert "would_delete   1" in out and "kept           8" in out, out
    assert all(os.path.lexists(root / r) for r in rel.values())
    seen = _decisions(live.instance, list(key.values()), observations=True)
    assert seen[key["ok"]]["action"] == "would delete" and seen[key["ok"]]["dry_run"] is True
    expected = {
        "young": "retention",
        "check_failed": "copy_check: copy_checksum_matches_source failed",
        "quarantined": "quarantine: quarantined by operator",
        "modified": "source: changed since registration",
        "dest_altered": "copy_verified: copy re-hashed",
        "dest_missing": "copy_verified: copy missing",
        "symlink": "source: reached through a symlink",
        "never_copied": "copy: nersc_copy never materialized",
    }
    for name, reason in expected.items():
        assert seen[key[name]]["action"] == "kept", (name, seen[key[name]])
        assert seen[key[name]]["reason"].startswith(reason), (name, seen[key[name]]["reason"])

    assert main([*cli, "--delete"]) == 0
    out = capsys.readouterr().out
    assert "deleted        1" in out, out
    assert {name for name, r in rel.items() if not os.path.lexists(root / r)} == {"ok"}
    done = _decisions(live.instance, list(key.values()), observations=False)
    assert done[key["ok"]]["action"] == "deleted"
    assert done[key["ok"]]["conditions"]["copy_verified"].startswith("ok: copy re-hashed")
    assert {k for k, m in done.items() if m["action"] == "kept"} == set(key.values()) - {key["ok"]}
    # The ledger: the deleted scan's records compacted into one; every decision in the audit trail.
    assert ledger.get(REGISTRATION, key["ok"]) is None and ledger.get(COPY, key["ok"]) is None
    assert ledger.get(PRUNED, key["ok"])["relpath"] == rel["ok"]
    assert ledger.get(REGISTRATION, key["young"]) is not None
    history = [(h[1]["dry_run"], h[1]["action"]) for h in ledger.history(AUDIT_KIND, key["ok"])]
    assert history == [(True, "would delete"), (False, "deleted")]
    assert len(ledger.history(AUDIT_KIND)) == 2 * len(key)
