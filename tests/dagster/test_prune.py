"""Pruning in the local profile through the Dagster layer: a mix of scans, dry run then delete."""

import os
import time

import dagster as dg
from dagster._core.definitions.asset_checks.asset_check_evaluation import AssetCheckEvaluation

from cosmic_dagster import names
from cosmic_dagster.definitions import build_definitions
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.quarantine import Quarantine
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.pipeline.prune import AUDIT_KIND, PRUNED
from cosmic_dagster.pipeline.stages import COPY, REGISTRATION

OLD = time.time() - 40 * 86_400


def _latest(instance, keys, observations):
    fetch = instance.fetch_observations if observations else instance.fetch_materializations
    records = fetch(
        dg.AssetRecordsFilter(asset_key=dg.AssetKey(names.BEAMLINE_PRUNED), asset_partitions=keys), limit=1000
    ).records
    out = {}
    for record in reversed(records):
        event = record.asset_observation if observations else record.asset_materialization
        out[event.partition] = {k: getattr(v, "value", v) for k, v in event.metadata.items()}
    return out


def _prune(defs, instance, delete):
    return defs.resolve_job_def(names.PRUNE_JOB).execute_in_process(
        instance=instance,
        run_config={"ops": {names.PRUNE_OP: {"config": {"delete": delete}}}},
        raise_on_error=False,
    )


def test_prune_deletes_exactly_the_safe_scans_and_records_every_decision(settings, beamline):
    defs = build_definitions(settings)
    instance = dg.DagsterInstance.ephemeral()
    names_ = ["ok", "young", "check_failed", "quarantined", "modified", "dest_altered", "dest_missing"]
    names_ += ["symlink", "never_copied"]
    rel = {name: beamline.scan() for name in names_}
    key = {name: scan_key(r) for name, r in rel.items()}
    for name in names_:
        if name != "young":
            os.utime(beamline.root / rel[name], (OLD, OLD))
    instance.add_dynamic_partitions("scans", list(key.values()))
    processed = [key[n] for n in names_ if n != "never_copied"]
    scan_job = defs.resolve_job_def(names.SCAN_JOB)
    assert scan_job.execute_in_process(
        instance=instance,
        tags={names.TAG_RANGE_START: processed[0], names.TAG_RANGE_END: processed[-1]},
    ).success
    assert scan_job.execute_in_process(
        instance=instance, partition_key=key["never_copied"], asset_selection=[dg.AssetKey(names.RAW_SCAN)]
    ).success

    # What goes wrong after processing: a later failed copy check, a quarantine, a file rewritten,
    # a copy altered or lost at NERSC, a beamline file replaced by a link inside the root.
    instance.report_runless_asset_event(
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
    with open(beamline.root / rel["modified"], "ab") as f:
        f.write(b"appended later")
    altered = settings.nersc_root / rel["dest_altered"]
    data = bytearray(altered.read_bytes())
    data[-1] ^= 0xFF
    altered.write_bytes(bytes(data))
    (settings.nersc_root / rel["dest_missing"]).unlink()
    link = beamline.root / rel["symlink"]
    target = link.with_name("moved.h5")
    link.rename(target)
    link.symlink_to(target)

    dry = _prune(defs, instance, delete=False)
    assert dry.success
    assert all((beamline.root / r).exists() for r in rel.values())
    seen = _latest(instance, list(key.values()), observations=True)
    assert set(seen) == set(key.values())
    assert seen[key["ok"]]["action"] == "would delete"
    expected = {
        "young": "retention",
        "check_failed": "copy_check",
        "quarantined": "quarantine",
        "modified": "source: changed since registration",
        "dest_altered": "copy_verified",
        "dest_missing": "copy_verified: copy missing",
        "symlink": "source: reached through a symlink",
        "never_copied": "copy:",
    }
    for name, reason in expected.items():
        assert seen[key[name]]["action"] == "kept", (name, seen[key[name]])
        assert seen[key[name]]["reason"].startswith(reason), (name, seen[key[name]]["reason"])
    assert dry.output_for_node(names.PRUNE_OP) is None
    assert dry.asset_materializations_for_node(names.PRUNE_OP) == []

    real = _prune(defs, instance, delete=True)
    assert real.success
    gone = {name for name, r in rel.items() if not os.path.lexists(beamline.root / r)}
    assert gone == {"ok"}
    done = _latest(instance, list(key.values()), observations=False)
    assert done[key["ok"]]["action"] == "deleted"
    assert done[key["ok"]]["conditions"]["copy_verified"].startswith("ok: copy re-hashed")
    assert {k for k, m in done.items() if m["action"] == "kept"} == set(key.values()) - {key["ok"]}
    # The ledger: records of the deleted scan compacted into one, every decision in the audit trail.
    assert ledger.get(REGISTRATION, key["ok"]) is None and ledger.get(COPY, key["ok"]) is None
    assert ledger.get(PRUNED, key["ok"])["relpath"] == rel["ok"]
    assert ledger.get(REGISTRATION, key["young"]) is not None
    history = ledger.history(AUDIT_KIND, key["ok"])
    assert [(h[1]["dry_run"], h[1]["action"]) for h in history] == [
        (True, "would delete"),
        (False, "deleted"),
    ]
    assert len(ledger.history(AUDIT_KIND)) == 2 * len(key)
    # A second real run has nothing left to delete and does not consider the pruned scan again.
    assert _prune(defs, instance, delete=True).success
    assert len(ledger.history(AUDIT_KIND)) == 3 * len(key) - 1
