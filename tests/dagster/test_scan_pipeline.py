"""The Dagster layer in process: batches, per-scan outcomes, checks, sensor behaviour."""

import os

import dagster as dg
import pytest

from cosmic_dagster import names
from cosmic_dagster.definitions import build_definitions
from cosmic_dagster.defs.profiles import resources_for
from cosmic_dagster.defs.progress import scan_progress
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.quarantine import KIND as QUARANTINE
from cosmic_dagster.domain.scans import scan_key
from cosmic_dagster.ptycho import verdict


def run_batch(defs, instance, keys, job="scan_job", run_config=None, tags=None):
    instance.add_dynamic_partitions("scans", keys)
    return defs.resolve_job_def(job).execute_in_process(
        instance=instance,
        run_config=run_config,
        tags={
            "dagster/asset_partition_range_start": keys[0],
            "dagster/asset_partition_range_end": keys[-1],
            **(tags or {}),
        },
        raise_on_error=False,
    )


@pytest.fixture
def defs(settings):
    return build_definitions(settings)


def test_a_bad_scan_fails_alone_and_is_quarantined(defs, settings, beamline):
    good = [beamline.scan(), beamline.scan()]
    bad = beamline.defect("truncated")
    keys = [scan_key(good[0]), scan_key(bad), scan_key(good[1])]
    instance = dg.DagsterInstance.ephemeral()
    result = run_batch(defs, instance, keys)
    assert not result.success
    failure = result.failure_data_for_node("scan_pipeline")
    assert scan_key(bad) in failure.error.message and "truncated" in failure.error.message.lower()
    progress = scan_progress(instance, keys)
    for key in (keys[0], keys[2]):
        assert progress[key].stage == "checked" and progress[key].passed, progress[key]
    assert progress[keys[1]].stage == "detected"
    reason = Ledger(settings.state_dir / "ledger.sqlite").get(QUARANTINE, keys[1])
    assert reason["stage"] == "raw_scan" and "truncated" in reason["reason"].lower()
    assert (settings.beamline_root / bad).exists()  # nothing lost


def test_reconstruction_metadata_and_preview(defs, beamline):
    key = scan_key(beamline.scan())
    instance = dg.DagsterInstance.ephemeral()
    assert run_batch(defs, instance, [key]).success
    meta = scan_progress(instance, [key])[key].metadata
    assert meta["raw_scan"]["frames"] > 0 and len(meta["raw_scan"]["sha256"]) == 64
    assert meta["nersc_copy"]["checksum_verified"] is True
    recon = meta["reconstruction"]
    assert recon["state"] == "COMPLETED" and recon["fourier_error_drop"] > 1
    assert os.path.exists(recon["preview_path"]) and "data:image/png;base64" in recon["preview"]
    # The engine chose the probe defocus itself and says why; the verdict's main figure is shown.
    assert recon["probe_defocus_chosen_by"] == "auto" and recon["probe_defocus_um"] > 0
    assert "held-out frames" in recon["probe_defocus_reason"] and recon["auto_focus_s"] >= 0
    assert recon["probe_defocus_contrast"] > verdict.LIMITS.min_focus_contrast  # the data fixed it
    assert 0.5 < recon["error_to_noise_floor"] < 2 and recon["noise_floor"] > 0
    assert 20 < recon["beam_px"] < 29  # the simulated beam is 24 px across
    assert recon["detector_binning"] == 1  # the demo's counts are high: full frames


def test_a_fixed_probe_defocus_is_recorded_as_the_operator_s(defs, beamline):
    key = scan_key(beamline.scan())
    instance = dg.DagsterInstance.ephemeral()
    config = {"ops": {"scan_pipeline": {"config": {"probe_defocus_um": -17.0}}}}
    assert run_batch(defs, instance, [key], run_config=config).success
    progress = scan_progress(instance, [key])[key]
    recon = progress.metadata["reconstruction"]
    assert recon["probe_defocus_chosen_by"] == "operator" and recon["probe_defocus_um"] == -17.0
    assert progress.checks["reconstruction_quality"] is False  # the wrong sign for these files


def test_parameters_through_run_config_and_no_progress_fails_the_check(defs, beamline):
    key = scan_key(beamline.scan())
    instance = dg.DagsterInstance.ephemeral()
    assert run_batch(defs, instance, [key]).success
    first = scan_progress(instance, [key])[key].metadata["reconstruction"]
    # One ePIE iteration cannot converge; the likelihood finish could (it refines object and probe,
    # and reaches a right image of this tiny scan on its own), so it is turned off too.
    config = {"ops": {"scan_pipeline": {"config": {"iterations": 1, "likelihood_iterations": 0}}}}
    result = run_batch(defs, instance, [key], job="reconstruction_job", run_config=config)
    assert result.success
    progress = scan_progress(instance, [key])[key]
    assert progress.metadata["reconstruction"]["job_id"] != first["job_id"]
    parameters = progress.metadata["reconstruction"]["parameters"]
    assert parameters["iterations"] == 1 and parameters["likelihood_iterations"] == 0
    assert progress.checks["reconstruction_quality"] is False


def test_same_parameters_reattach_instead_of_recomputing(defs, beamline):
    key = scan_key(beamline.scan())
    instance = dg.DagsterInstance.ephemeral()
    assert run_batch(defs, instance, [key]).success
    first = scan_progress(instance, [key])[key].metadata["reconstruction"]
    assert run_batch(defs, instance, [key], job="reconstruction_job").success
    second = scan_progress(instance, [key])[key].metadata["reconstruction"]
    assert second["job_id"] == first["job_id"] and second["reattached"] is True


def test_sensor_registers_batches_and_refuses_escaping_symlinks(settings, beamline, tmp_path):
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("scan_arrival_sensor")
    instance = dg.DagsterInstance.ephemeral()
    scans = [beamline.scan() for _ in range(3)]
    outside = tmp_path / "outside.cxi"
    outside.write_bytes(b"secret")
    evil = settings.beamline_root / beamline.relpath().replace(".cxi", "_evil.cxi")
    evil.symlink_to(outside)
    (settings.beamline_root / beamline.relpath()).with_suffix(".cxi.tmp").write_bytes(b"partial")
    context = dg.build_sensor_context(instance=instance, resources=resources_for(settings))
    result = sensor(context)
    keys = [scan_key(s) for s in scans]
    assert result.dynamic_partitions_requests[0].partition_keys == keys
    [run] = result.run_requests
    assert run.tags["dagster/asset_partition_range_start"] == keys[0]
    assert run.tags["dagster/asset_partition_range_end"] == keys[-1]
    ledger = Ledger(settings.state_dir / "ledger.sqlite")
    assert (
        "outside the beamline root"
        in ledger.get(QUARANTINE, scan_key(str(evil.relative_to(settings.beamline_root))))["reason"]
    )
    instance.add_dynamic_partitions("scans", keys)
    again = sensor(
        dg.build_sensor_context(instance=instance, resources=resources_for(settings), cursor=result.cursor)
    )
    assert isinstance(again, dg.SkipReason)


def test_a_file_removed_before_its_copy_fails_clearly(defs, beamline, settings):
    relpath = beamline.scan()
    key = scan_key(relpath)
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions("scans", [key])
    job = defs.resolve_job_def("scan_job")
    registered = job.execute_in_process(
        instance=instance, partition_key=key, asset_selection=[dg.AssetKey("raw_scan")]
    )
    assert registered.success
    (settings.beamline_root / relpath).unlink()
    copied = job.execute_in_process(
        instance=instance,
        partition_key=key,
        asset_selection=[dg.AssetKey("nersc_copy")],
        raise_on_error=False,
    )
    message = copied.failure_data_for_node("scan_pipeline").error.message
    assert key in message and "vanished before its copy" in message
    reason = Ledger(settings.state_dir / "ledger.sqlite").get(QUARANTINE, key)
    assert reason["stage"] == "nersc_copy"


def test_sensor_relaunches_partitions_whose_run_never_started(settings, beamline):
    """The daemon died after adding the partitions but before launching (or saving the cursor)."""
    defs = build_definitions(settings)
    sensor = defs.resolve_sensor_def("scan_arrival_sensor")
    instance = dg.DagsterInstance.ephemeral()
    keys = [scan_key(beamline.scan()) for _ in range(2)]
    instance.add_dynamic_partitions("scans", keys)  # added, no run, cursor not saved
    retry = sensor(dg.build_sensor_context(instance=instance, resources=resources_for(settings)))
    assert retry.dynamic_partitions_requests[0].partition_keys == keys and len(retry.run_requests) == 1
    assert retry.run_requests[0].tags[names.TAG_SUBMITTED_BY] == names.BY_SENSOR
    watcher = {names.TAG_SUBMITTED_BY: names.BY_WATCHER}
    result = run_batch(defs, instance, keys, tags=watcher)  # now they have their run: the watcher's
    assert result.success
    skipped = sensor(dg.build_sensor_context(instance=instance, resources=resources_for(settings)))
    assert isinstance(skipped, dg.SkipReason)
    # The tick says why it requested nothing, and where the runs are.
    assert "2 new scan(s) already launched by watcher" in skipped.skip_message
    assert result.run_id[:8] in skipped.skip_message


def test_a_successful_batch_logs_no_missing_output_line(defs, beamline):
    """Per-scan check evaluations count as the checks' outputs: no "did not yield" noise."""
    keys = [scan_key(beamline.scan()), scan_key(beamline.scan())]
    instance = dg.DagsterInstance.ephemeral()
    for job, evaluations in (("scan_job", 4), ("reconstruction_job", 2)):
        result = run_batch(defs, instance, keys, job=job)
        assert result.success
        assert not [r for r in instance.all_logs(result.run_id) if "did not yield" in r.user_message]
        checks = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)
        assert len(checks) == evaluations  # one per scan and check, none extra


def test_every_reconstruction_parameter_is_described_for_the_launchpad():
    from cosmic_dagster.compute.engines import engine_names
    from cosmic_dagster.defs.assets import ReconstructionConfig

    for name, field in ReconstructionConfig.model_fields.items():
        assert field.description, f"{name} has no description"
        assert any(e in field.description for e in (*engine_names(), "all engines")), name
