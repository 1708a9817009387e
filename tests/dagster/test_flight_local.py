"""The flight check job in the local profile: green on a healthy machine, the failed step named."""

import shutil

import dagster as dg
import pytest

from cosmic_dagster import names
from cosmic_dagster.config import ConfigError, Settings
from cosmic_dagster.definitions import build_definitions
from cosmic_dagster.pipeline.flight import CANARY_RELPATH

WITH_JOB = {"ops": {names.FLIGHT_OP: {"config": {"trivial_job": True}}}}


def test_local_flight_check_copies_the_canary_and_runs_a_job(settings, beamline):
    job = build_definitions(settings).resolve_job_def(names.FLIGHT_JOB)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), run_config=WITH_JOB)
    assert result.success
    copy = settings.nersc_root / CANARY_RELPATH
    assert copy.read_bytes() == (settings.beamline_root / CANARY_RELPATH).read_bytes()


def test_a_missing_beamline_folder_fails_the_collections_step(settings, beamline):
    shutil.rmtree(settings.beamline_root)
    job = build_definitions(settings).resolve_job_def(names.FLIGHT_JOB)
    result = job.execute_in_process(instance=dg.DagsterInstance.ephemeral(), raise_on_error=False)
    failure = result.failure_data_for_node(names.FLIGHT_OP).user_failure_data
    assert failure.metadata["failed_steps"].value == ["collections"]
    assert "flight check step collections failed" in failure.description
    assert str(settings.beamline_root) in failure.description


def test_the_schedule_runs_every_12_hours_by_default_and_tags_its_runs(settings):
    schedule = build_definitions(settings).resolve_schedule_def(names.FLIGHT_SCHEDULE)
    assert schedule.cron_schedule == "0 */12 * * *"
    assert schedule.tags[names.TAG_SUBMITTED_BY] == names.BY_SCHEDULE


def test_a_bad_flight_cron_is_a_clear_config_error(tmp_path):
    env = {"COSMIC_DATA_ROOT": str(tmp_path), "COSMIC_FLIGHT_CRON": "every 12 hours"}
    with pytest.raises(ConfigError, match="COSMIC_FLIGHT_CRON='every 12 hours': expected a cron string"):
        Settings.from_env(env)
    assert Settings.from_env({**env, "COSMIC_FLIGHT_CRON": "30 6 * * *"}).flight_cron == "30 6 * * *"
