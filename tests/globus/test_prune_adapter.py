"""Pruning over Globus against the emulator: checksum-sync verification, delete tasks, failing deletes."""

import os
import time
from dataclasses import asdict
from pathlib import Path

from cosmic_dagster.emulators.globus.faults import PathFault
from cosmic_dagster.pipeline.prune import DELETE_FAILED, DELETED, KEPT, PrunePolicy, Pruner, ScanFacts
from cosmic_dagster.pipeline.stages import REGISTRATION, Registration
from tests.globus.conftest import make_scan, scan_relpath

OLD = time.time() - 40 * 86_400
DONE = ScanFacts(copied=True, copy_check=True, reconstructed=True)


def test_prune_over_globus_verifies_by_checksum_sync_and_checks_each_delete(
    beamline: Path, nersc: Path, emulator, make_adapter, ledger
):
    adapter = make_adapter()
    names = ["ok", "delete_refused", "delete_fails", "dest_altered", "dest_missing", "modified", "symlink"]
    items = {name: make_scan(beamline, scan_relpath(i + 1), seed=i) for i, name in enumerate(names)}
    for item in items.values():
        os.utime(beamline / item.relpath, (OLD, OLD))
    report = adapter.copy_batch(list(items.values()), "initial copy")
    assert all(o.ok for o in report.outcomes.values())
    for item in items.values():
        st = (beamline / item.relpath).stat()
        reg = Registration(item.key, item.relpath, item.size, item.sha256, st.st_mtime, {})
        ledger.put(REGISTRATION, item.key, asdict(reg))

    altered = nersc / items["dest_altered"].relpath

    def damage_copies() -> None:
        altered.write_bytes(altered.read_bytes()[::-1])  # same size, other bytes: a name match passes
        (nersc / items["dest_missing"].relpath).unlink()

    damage_copies()
    with open(beamline / items["modified"].relpath, "ab") as f:
        f.write(b"x")
    link = beamline / items["symlink"].relpath
    link.rename(link.with_name("elsewhere.h5"))
    link.symlink_to(link.with_name("elsewhere.h5"))
    # Deletes refused by the beamline collection: once for good (the task fails), once retried
    # forever (the task stays ACTIVE on PERMISSION_DENIED until we cancel it).
    emulator.inject(
        PathFault(
            path=f"/{items['delete_fails'].relpath}", error="ENDPOINT_ERROR", fatal=True, task="delete"
        ),
        PathFault(path=f"/{items['delete_refused'].relpath}", error="PERMISSION_DENIED", task="delete"),
    )

    pruner = Pruner(ledger, adapter, PrunePolicy(retention_days=30))
    facts = {item.key: DONE for item in items.values()}
    dry = pruner.run(facts, now=time.time(), delete=False)
    would = {d.key for d in dry.decisions if d.action == "would delete"}
    assert would == {items[n].key for n in ("ok", "delete_refused", "delete_fails")}
    assert all((beamline / i.relpath).exists() or (beamline / i.relpath).is_symlink() for i in items.values())
    # The verification task repaired both copies (copied them again): damage them once more.
    assert altered.read_bytes() == (beamline / items["dest_altered"].relpath).read_bytes()
    damage_copies()

    real = {d.key: d for d in pruner.run(facts, now=time.time(), delete=True).decisions}
    assert real[items["ok"].key].action == DELETED
    assert not (beamline / items["ok"].relpath).exists()
    for name in ("delete_refused", "delete_fails"):
        d = real[items[name].key]
        assert d.action == DELETE_FAILED and "Globus delete task" in d.reason, d
        assert (beamline / items[name].relpath).exists()
    assert "ENDPOINT_ERROR" in real[items["delete_fails"].key].reason
    for name, why in (
        ("dest_altered", "copy_verified: copy at NERSC was missing or differed"),
        ("dest_missing", "copy_verified: copy at NERSC was missing or differed"),
        ("modified", "source: changed since registration"),
        ("symlink", "source: a symlink"),
    ):
        d = real[items[name].key]
        assert d.action == KEPT and d.reason.startswith(why), (name, d.reason)
    assert real[items["modified"].key].conditions["copy_verified"].startswith("not checked")
    assert (nersc / items["dest_missing"].relpath).exists()  # repaired again, kept this time
    kinds = [t["type"] for t in emulator.tasks()]
    assert kinds.count("DELETE") == 1 and kinds.count("TRANSFER") == 3  # copy + two verifications
