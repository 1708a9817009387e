"""Deployment settings from the environment, validated once with clear errors.

Everything for the default ``local`` profile lives under one data root, so a new user needs no
account and no configuration: ``COSMIC_DATA_ROOT`` (default ``~/.cosmic-dagster``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cosmic_dagster.compute.jobscript import JobScriptError, SlurmDirectives
from cosmic_dagster.errors import CosmicError

PROFILES = ("local", "nersc", "slurm")
#: GPU jobs at NERSC: the CUDA 12 libraries CuPy's wheel needs (Perlmutter's module); a no-op
#: where there is no ``module`` command.
NERSC_GPU_SETUP = "if type module >/dev/null 2>&1; then module load cudatoolkit; fi"


RECOMMENDED_GRACE_S = 30.0  # COSMIC_SENSOR_GRACE_S with a watcher
WATCHER_MIN_GRACE_S = 3.0


class ConfigError(CosmicError, ValueError):
    """A setting is missing or invalid; the message names the variable and what is expected."""


def _number(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"{name}={raw!r} is not a number") from None
    if value < minimum:
        raise ConfigError(f"{name}={raw!r} must be >= {minimum}")
    return value


def _optional(env: Mapping[str, str], name: str, default: str | None) -> str | None:
    """An optional string setting; the value ``none`` removes a default (e.g. no --constraint)."""
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    return None if raw.lower() == "none" else raw


def _url(env: Mapping[str, str], name: str, default: str | None, secret: bool = False) -> str | None:
    """An http(s) URL setting; a secret one (webhooks embed a token) is never echoed in errors."""
    raw = env.get(name) or default
    if raw is None:
        return None
    try:
        parts = urlsplit(raw)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        shown = " (value not shown: it may contain a token)" if secret else f"={raw!r}"
        raise ConfigError(f"{name}{shown} must be an http:// or https:// URL")
    return raw


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = (env.get(name) or "").strip().lower()
    if raw == "":
        return default
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name}={raw!r}: expected true or false")


def _cron(env: Mapping[str, str], name: str, default: str) -> str:
    """A five-field cron string (checked for shape here; Dagster validates the fields)."""
    raw = (env.get(name) or default).strip()
    if len(raw.split()) != 5:
        raise ConfigError(f"{name}={raw!r}: expected a cron string of five fields, e.g. {default!r}")
    return raw


@dataclass(frozen=True)
class Settings:
    profile: str
    data_root: Path
    beamline_root: Path
    nersc_root: Path
    state_dir: Path
    recon_root: Path
    recent_days: int
    settle_seconds: float
    max_scans_per_tick: int
    max_scans_per_run: int
    sensor_interval_s: int
    sensor_grace_s: float | None  # None: unset, the sensor takes scans at once (no watcher)
    local_slots: int
    ui_url: str  # for links in alerts: {ui_url}/runs/{run_id}
    flight_cron: str  # when the flight check runs (cron, the daemon's time zone)
    alert_webhook_url: str | None = field(repr=False)  # may embed a token: never shown
    retention_days: float = 30.0  # beamline copies older than this may be pruned (once verified)
    prune_cron: str = "30 3 * * *"  # the prune schedule (stopped until an operator starts it)
    prune_delete: bool = False  # the schedule deletes only when this is set; dry run otherwise
    reconcile_days: int = 30  # day folders (counted back from today) that reconciliation lists
    reconcile_cron: str = "15 2 * * *"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        profile = env.get("COSMIC_PROFILE", "local") or "local"
        if profile not in PROFILES:
            raise ConfigError(f"COSMIC_PROFILE={profile!r}: expected one of {', '.join(PROFILES)}")
        data_root = (
            Path(env.get("COSMIC_DATA_ROOT") or Path.home() / ".cosmic-dagster").expanduser().absolute()
        )

        def path(name: str, default: Path) -> Path:
            raw = env.get(name)
            return Path(raw).expanduser().absolute() if raw else default

        return cls(
            profile=profile,
            data_root=data_root,
            beamline_root=path("COSMIC_BEAMLINE_ROOT", data_root / "beamline"),
            nersc_root=path("COSMIC_NERSC_ROOT", data_root / "nersc"),
            state_dir=path("COSMIC_STATE_DIR", data_root / "state"),
            recon_root=path("COSMIC_RECON_ROOT", data_root / "reconstructions"),
            recent_days=int(_number(env, "COSMIC_RECENT_DAYS", 2, 1)),
            settle_seconds=_number(env, "COSMIC_SETTLE_SECONDS", 2.0, 0),
            max_scans_per_tick=int(_number(env, "COSMIC_MAX_SCANS_PER_TICK", 200, 1)),
            max_scans_per_run=int(_number(env, "COSMIC_MAX_SCANS_PER_RUN", 20, 1)),
            sensor_interval_s=int(_number(env, "COSMIC_SENSOR_INTERVAL_S", 5, 1)),
            sensor_grace_s=_number(env, "COSMIC_SENSOR_GRACE_S", 0.0, 0)
            if env.get("COSMIC_SENSOR_GRACE_S")
            else None,
            local_slots=int(_number(env, "COSMIC_LOCAL_SLOTS", max(1, os.cpu_count() or 1), 1)),
            ui_url=str(_url(env, "COSMIC_UI_URL", "http://localhost:3000")).rstrip("/"),
            flight_cron=_cron(env, "COSMIC_FLIGHT_CRON", "0 */12 * * *"),
            alert_webhook_url=_url(env, "COSMIC_ALERT_WEBHOOK_URL", None, secret=True),
            retention_days=_number(env, "COSMIC_RETENTION_DAYS", 30.0, 0),
            prune_cron=_cron(env, "COSMIC_PRUNE_CRON", "30 3 * * *"),
            prune_delete=_flag(env, "COSMIC_PRUNE_DELETE", False),
            reconcile_days=int(_number(env, "COSMIC_RECONCILE_DAYS", 30, 1)),
            reconcile_cron=_cron(env, "COSMIC_RECONCILE_CRON", "15 2 * * *"),
        )

    def watcher_grace_s(self) -> float:
        """The grace period as the push trigger needs it: set, and the daemon's value too.

        A watcher next to a sensor that does not wait could launch the same scan as the sensor.
        """
        if self.sensor_grace_s is None:
            raise ConfigError(
                "COSMIC_SENSOR_GRACE_S is not set: give the Dagster daemon and the watcher the same value "
                f"({RECOMMENDED_GRACE_S:g} s recommended) so the sensor leaves fresh scans to the watcher"
            )
        if self.sensor_grace_s < WATCHER_MIN_GRACE_S:
            raise ConfigError(
                f"COSMIC_SENSOR_GRACE_S={self.sensor_grace_s:g}: the watcher needs the sensor to wait at "
                f"least {WATCHER_MIN_GRACE_S:g} s ({RECOMMENDED_GRACE_S:g} s recommended), or both could "
                "launch the same scan"
            )
        return self.sensor_grace_s


@dataclass(frozen=True)
class SiteSettings:
    """Where copies go and jobs run for the ``nersc`` and ``slurm`` profiles.

    Secrets are not here: the adapters read them from their own variables/files
    (GLOBUS_CLIENT_ID/GLOBUS_CLIENT_SECRET[_FILE], PATH_NERSC_ID/PATH_NERSC_PRI_KEY).
    """

    transfer: str  # local | globus
    arrivals: str  # directory | globus
    endpoints_file: Path | None
    globus_source: str
    globus_destination: str
    recon_root: str  # as the compute side sees it
    python: str
    setup: str
    gpu_setup: str
    """Shell lines GPU jobs run before the engine (COSMIC_GPU_JOB_SETUP; NERSC: load CUDA for CuPy)."""
    slurm: SlurmDirectives
    poll_interval_s: float

    @classmethod
    def from_env(cls, settings: Settings, env: Mapping[str, str] | None = None) -> SiteSettings:
        env = os.environ if env is None else env
        nersc = settings.profile == "nersc"
        transfer = env.get("COSMIC_TRANSFER") or ("globus" if nersc else "local")
        arrivals = env.get("COSMIC_ARRIVALS") or "directory"
        for name, value, allowed in (
            ("COSMIC_TRANSFER", transfer, ("local", "globus")),
            ("COSMIC_ARRIVALS", arrivals, ("directory", "globus")),
        ):
            if value not in allowed:
                raise ConfigError(f"{name}={value!r}: expected one of {', '.join(allowed)}")
        endpoints = env.get("COSMIC_ENDPOINTS_FILE")
        if (transfer == "globus" or arrivals == "globus") and not endpoints:
            raise ConfigError("COSMIC_ENDPOINTS_FILE must name the Globus endpoints file (config.yml format)")
        recon_root = env.get("COSMIC_NERSC_RECON_ROOT") if nersc else str(settings.recon_root)
        if not recon_root:
            raise ConfigError("COSMIC_NERSC_RECON_ROOT must name the NERSC folder jobs write into")
        return cls(
            transfer=transfer,
            arrivals=arrivals,
            endpoints_file=Path(endpoints).expanduser().absolute() if endpoints else None,
            globus_source=env.get("COSMIC_GLOBUS_SOURCE") or "data7012",
            globus_destination=env.get("COSMIC_GLOBUS_DESTINATION") or "nersc7012",
            recon_root=recon_root,
            python=env.get("COSMIC_JOB_PYTHON") or ("python3" if nersc else sys.executable),
            setup=env.get("COSMIC_JOB_SETUP", ""),
            gpu_setup=env.get("COSMIC_GPU_JOB_SETUP", NERSC_GPU_SETUP if nersc else ""),
            slurm=_slurm(env, nersc),
            poll_interval_s=_number(env, "COSMIC_POLL_INTERVAL_S", 10.0 if nersc else 2.0, 0.1),
        )


#: Settings that moved: the engine now says what its jobs use (cores, GPUs).
_MOVED = {
    "COSMIC_SLURM_GPUS": "the engine requests the GPUs it uses",
    "COSMIC_SLURM_CONSTRAINT": "use COSMIC_SLURM_CPU_CONSTRAINT / COSMIC_SLURM_GPU_CONSTRAINT (the node "
    "features for CPU-only and GPU jobs)",
}


def _slurm(env: Mapping[str, str], nersc: bool) -> SlurmDirectives:
    """The site's Slurm settings (Perlmutter's at NERSC); ``none`` removes a default."""
    moved = [f"{name} is no longer read: {why}" for name, why in _MOVED.items() if env.get(name)]
    if moved:
        raise ConfigError("; ".join(moved))
    try:
        return SlurmDirectives(
            account=_optional(env, "COSMIC_SLURM_ACCOUNT", "als_g" if nersc else None),
            qos=_optional(env, "COSMIC_SLURM_QOS", "regular" if nersc else None),
            partition=_optional(env, "COSMIC_SLURM_PARTITION", None),
            time_limit=_optional(env, "COSMIC_SLURM_TIME", None),
            cpu_constraint=_optional(env, "COSMIC_SLURM_CPU_CONSTRAINT", "cpu" if nersc else None),
            gpu_constraint=_optional(env, "COSMIC_SLURM_GPU_CONSTRAINT", "gpu" if nersc else None),
        )
    except JobScriptError as exc:
        raise ConfigError(f"COSMIC_SLURM_*: {exc}") from None
