"""Pools are held per phase: a full copy pool holds the batch before its copy, a free one lets it
through, and the slot is given back when the copy ends (not when the reconstruction does)."""

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from cosmic_dagster.definitions import build_definitions
from cosmic_dagster.defs.progress import scan_progress
from cosmic_dagster.domain.scans import scan_key
from tests.dagster.test_scan_pipeline import run_batch


def slots_held(instance: dg.DagsterInstance, pool: str) -> int:
    return instance.event_log_storage.get_concurrency_info(pool).active_slot_count


@pytest.mark.slow
def test_a_full_pool_holds_the_copy_until_a_slot_is_free(settings, beamline, tmp_path: Path):
    defs = build_definitions(settings)
    key = scan_key(beamline.scan())
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        storage = instance.event_log_storage
        storage.set_concurrency_slots("local-copy", 1)
        storage.set_concurrency_slots("local-compute", 1)
        # Another run holds the only copy slot.
        assert storage.claim_concurrency_slot("local-copy", "other-run", "other-step").is_claimed
        outcome: dict[str, dg.ExecuteInProcessResult] = {}
        worker = threading.Thread(target=lambda: outcome.update(r=run_batch(defs, instance, [key])))
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not storage.get_concurrency_info("local-copy").pending_steps:
            time.sleep(0.2)
        time.sleep(2.0)
        assert "nersc_copy" not in scan_progress(instance, [key])[key].metadata  # waiting, not copying
        storage.free_concurrency_slot_for_step("other-run", "other-step")
        worker.join(120)
        assert outcome["r"].success
        assert scan_progress(instance, [key])[key].stage == "checked"
        assert slots_held(instance, "local-copy") == 0 and slots_held(instance, "local-compute") == 0
        messages = [r.user_message for r in instance.all_logs(outcome["r"].run_id)]
        assert any("waiting for a slot in pool 'local-copy' (1 of 1 in use)" in m for m in messages)


def test_pools_without_a_limit_are_not_waited_for(settings, beamline, tmp_path: Path):
    defs = build_definitions(settings)
    key = scan_key(beamline.scan())
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        result = run_batch(defs, instance, [key])
        assert result.success
        assert not any("waiting for a slot" in r.user_message for r in instance.all_logs(result.run_id))
