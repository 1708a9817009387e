"""Resources per deployment profile (``COSMIC_PROFILE``)."""

from __future__ import annotations

from typing import Any

from cosmic_dagster.config import Settings
from cosmic_dagster.resources import (
    ArrivalsResource,
    LocalComputeResource,
    LocalTransferResource,
    StateResource,
)


def _common(settings: Settings) -> dict[str, Any]:
    return {
        "state": StateResource(state_dir=str(settings.state_dir)),
        "arrivals": ArrivalsResource(
            beamline_root=str(settings.beamline_root),
            recent_days=settings.recent_days,
            settle_seconds=settings.settle_seconds,
            max_scans_per_tick=settings.max_scans_per_tick,
            max_scans_per_run=settings.max_scans_per_run,
        ),
    }


def local_resources(settings: Settings) -> dict[str, Any]:
    """Everything on this machine under one data root: no account, no network."""
    return {
        **_common(settings),
        "transfer": LocalTransferResource(
            source_root=str(settings.beamline_root), destination_root=str(settings.nersc_root)
        ),
        "compute": LocalComputeResource(
            recon_root=str(settings.recon_root),
            jobs_dir=str(settings.state_dir / "local-jobs"),
            slots=settings.local_slots,
        ),
    }


def resources_for(settings: Settings) -> dict[str, Any]:
    builders = {"local": local_resources}
    if settings.profile not in builders:
        raise NotImplementedError(f"profile {settings.profile!r} is not wired yet")
    return builders[settings.profile](settings)
