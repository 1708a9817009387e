"""Deployment settings from the environment, validated once with clear errors.

Everything for the default ``local`` profile lives under one data root, so a new user needs no
account and no configuration: ``COSMIC_DATA_ROOT`` (default ``~/.cosmic-dagster``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

PROFILES = ("local", "nersc", "slurm")


class ConfigError(ValueError):
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
    local_slots: int

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
            local_slots=int(_number(env, "COSMIC_LOCAL_SLOTS", max(1, os.cpu_count() or 1), 1)),
        )
