"""Resources per deployment profile (``COSMIC_PROFILE``): same assets, other adapters.

* ``local``: everything on this machine under one data root (no account, no network);
* ``nersc``: Globus to the NERSC collection, jobs on Perlmutter through SFAPI (the light agent);
* ``slurm``: local copy (or Globus) and jobs on the site's own Slurm cluster.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from cosmic_dagster.config import Settings, SiteSettings
from cosmic_dagster.defs.resources import (
    ArrivalsResource,
    ComputeResource,
    GlobusArrivalsResource,
    GlobusTransferResource,
    LocalComputeResource,
    LocalTransferResource,
    SfapiComputeResource,
    SlurmComputeResource,
    StateResource,
    TransferResource,
)


def _arrivals(settings: Settings, site: SiteSettings | None) -> ArrivalsResource:
    common = dict(
        beamline_root=str(settings.beamline_root),
        recent_days=settings.recent_days,
        settle_seconds=settings.settle_seconds,
        watch_grace_seconds=settings.sensor_grace_s or 0.0,
        max_scans_per_tick=settings.max_scans_per_tick,
        max_scans_per_run=settings.max_scans_per_run,
    )
    if site is not None and site.arrivals == "globus":
        return GlobusArrivalsResource(
            endpoints_file=str(site.endpoints_file), source=site.globus_source, **common
        )
    return ArrivalsResource(**common)


def _transfer(settings: Settings, site: SiteSettings | None) -> TransferResource:
    if site is not None and site.transfer == "globus":
        return GlobusTransferResource(
            endpoints_file=str(site.endpoints_file),
            source=site.globus_source,
            destination=site.globus_destination,
        )
    return LocalTransferResource(
        source_root=str(settings.beamline_root), destination_root=str(settings.nersc_root)
    )


def _site_fields(site: SiteSettings) -> dict[str, Any]:
    return dict(
        recon_root=site.recon_root,
        python=site.python,
        setup=site.setup,
        gpu_setup=site.gpu_setup,
        # Dagster config maps hold no nulls: an option left out is the directive's default (None).
        slurm={k: v for k, v in asdict(site.slurm).items() if v is not None},
    )


def resources_for(settings: Settings) -> dict[str, Any]:
    site = None if settings.profile == "local" else SiteSettings.from_env(settings)
    compute: ComputeResource
    if site is None:
        compute = LocalComputeResource(
            recon_root=str(settings.recon_root),
            jobs_dir=str(settings.state_dir / "local-jobs"),
            slots=settings.local_slots,
        )
    elif settings.profile == "nersc":
        compute = SfapiComputeResource(
            **_site_fields(site),
            poll_interval_s=site.poll_interval_s,
            max_poll_interval_s=6 * site.poll_interval_s,
        )
    else:
        compute = SlurmComputeResource(**_site_fields(site), poll_interval_s=site.poll_interval_s)
    return {
        "state": StateResource(state_dir=str(settings.state_dir)),
        "arrivals": _arrivals(settings, site),
        "transfer": _transfer(settings, site),
        "compute": compute,
    }
