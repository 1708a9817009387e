"""One engine registry: run config, CLI choices and job scripts all read it."""

from __future__ import annotations

import typing

import pytest

from cosmic_dagster.cli.main import _recon_config, build_parser
from cosmic_dagster.compute import engines
from cosmic_dagster.compute.jobscript import EpieParams, JobScriptError, PtychocamParams, Resources
from cosmic_dagster.config import ConfigError, Settings, SiteSettings
from cosmic_dagster.defs.assets import ReconstructionConfig


def test_registry_names_and_default() -> None:
    assert engines.engine_names() == ("epie", "ptychocam", "cdtools", "batched")
    assert engines.DEFAULT_ENGINE == "epie"
    for name, cls in engines.ENGINES.items():
        assert cls.engine == name and isinstance(cls().resources(), Resources)


def test_params_from_takes_the_fields_the_engine_has() -> None:
    values = {"iterations": 7, "seed": 3, "probe_defocus_um": None, "illumination_refine_period": 2}
    assert engines.params_from("epie", values) == EpieParams(iterations=7, seed=3)
    assert engines.params_from("ptychocam", values) == PtychocamParams(
        iterations=7, illumination_refine_period=2
    )
    with pytest.raises(
        JobScriptError, match="unknown engine 'nope'; known: epie, ptychocam, cdtools, batched"
    ):
        engines.params_from("nope", values)


def test_run_config_and_cli_offer_the_registered_engines() -> None:
    field = ReconstructionConfig.model_fields["engine"]
    assert typing.get_args(field.annotation) == engines.engine_names()
    assert ReconstructionConfig().params() == EpieParams()
    fixed = ReconstructionConfig(engine="epie", probe_defocus_um=-20.0).params()
    assert fixed == EpieParams(probe_defocus_um=-20.0)
    words = ["recon", "--average-iterations", "0", "--likelihood-iterations", "0", "NS_1_0_0"]
    config = _recon_config(build_parser().parse_args(words))["ops"]["scan_pipeline"]["config"]
    unfinished = EpieParams(average_iterations=0, likelihood_iterations=0)
    assert ReconstructionConfig(**config).params() == unfinished
    args = build_parser().parse_args(["recon", "--engine", "cdtools", "NS_230216033_ccdframes_0_0"])
    assert args.engine == "cdtools"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["recon", "--engine", "nope", "NS_230216033_ccdframes_0_0"])


def test_site_slurm_settings_have_one_definition(tmp_path) -> None:
    settings = Settings.from_env({"COSMIC_PROFILE": "nersc", "COSMIC_DATA_ROOT": str(tmp_path)})
    env = {"COSMIC_NERSC_RECON_ROOT": "/pscratch/recon", "COSMIC_TRANSFER": "local"}
    slurm = SiteSettings.from_env(settings, env).slurm
    assert (slurm.account, slurm.qos, slurm.cpu_constraint, slurm.gpu_constraint) == (
        "als_g",
        "regular",
        "cpu",
        "gpu",
    )
    assert slurm.time_limit is None  # the engine's own limit applies
    override = SiteSettings.from_env(settings, {**env, "COSMIC_SLURM_TIME": "00:10:00"}).slurm
    assert override.time_limit == "00:10:00"
    with pytest.raises(ConfigError, match="COSMIC_SLURM_GPUS is no longer read"):
        SiteSettings.from_env(settings, {**env, "COSMIC_SLURM_GPUS": "1"})
    with pytest.raises(ConfigError, match=r"COSMIC_SLURM_\*: .*HH:MM:SS"):
        SiteSettings.from_env(settings, {**env, "COSMIC_SLURM_TIME": "4h"})


def test_profile_passes_the_site_slurm_settings_to_the_compute_resource(tmp_path, monkeypatch) -> None:
    """Dagster config maps cannot hold nulls: unset options are left out, not passed as None."""
    from cosmic_dagster.defs.profiles import resources_for

    monkeypatch.setenv("COSMIC_NERSC_RECON_ROOT", "/pscratch/recon")
    monkeypatch.setenv("COSMIC_TRANSFER", "local")
    settings = Settings.from_env({"COSMIC_PROFILE": "nersc", "COSMIC_DATA_ROOT": str(tmp_path)})
    compute = resources_for(settings)["compute"]
    assert None not in compute.slurm.values()
    assert compute.directives() == SiteSettings.from_env(settings).slurm
