"""Fixtures shared by the Dagster-level and end-to-end tests."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from cosmic_dagster.config import Settings
from cosmic_dagster.ptycho.simulate import SimulationSpec, cosmic_relpath, write_defect, write_scan

#: The real one-node Slurm fixture (``slurm_cluster``) for tests marked ``slurm``.
pytest_plugins = ["tests.slurm_cluster"]

DAY = dt.date(2026, 11, 24)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Groups for ``make test``'s workers (pytest-xdist, ``--dist loadgroup``): a module runs on
    one worker, so its module-scoped services start once, and every test of the one local Slurm
    on one worker, so restarting its controller or filling its node meets no other test's job."""
    for item in items:
        shared = (
            "slurm" if "slurm_cluster" in getattr(item, "fixturenames", ()) else item.nodeid.split("::")[0]
        )
        item.add_marker(pytest.mark.xdist_group(shared))


class Beamline:
    """Writes scans into a beamline tree the way COSMIC does (for tests)."""

    def __init__(self, root: Path, day: dt.date = DAY):
        self.root = root
        self.day = day
        self.number = 0

    def relpath(self, number: int | None = None) -> str:
        if number is None:
            self.number += 1
            number = self.number
        return cosmic_relpath(self.day, number)

    def scan(self, relpath: str | None = None, spec: SimulationSpec | None = None) -> str:
        relpath = relpath or self.relpath()
        write_scan(self.root / relpath, spec or SimulationSpec.tiny(seed=self.number))
        return relpath

    def defect(self, kind: str, relpath: str | None = None) -> str:
        relpath = relpath or self.relpath()
        (self.root / relpath).parent.mkdir(parents=True, exist_ok=True)
        write_defect(self.root / relpath, kind)
        return relpath


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"COSMIC_DATA_ROOT": str(tmp_path / "data"), "COSMIC_SETTLE_SECONDS": "0"})


@pytest.fixture
def beamline(settings: Settings) -> Beamline:
    settings.beamline_root.mkdir(parents=True, exist_ok=True)
    return Beamline(settings.beamline_root)
