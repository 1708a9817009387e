"""A real Dagster daemon + webserver on a temporary DAGSTER_HOME, shared by a test module."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cosmic_dagster.config import Settings
from cosmic_dagster.graphql import DagsterApi
from cosmic_dagster.progress import ScanProgress, scan_progress
from cosmic_dagster.services import DagsterServices, free_port, prepare_home
from tests.conftest import Beamline


@dataclass
class LiveInstance:
    services: DagsterServices
    settings: Settings
    beamline: Beamline
    instance: dg.DagsterInstance
    env: dict[str, str]

    @property
    def api(self) -> DagsterApi:
        return DagsterApi(self.services.url)

    def wait_for(self, what: str, predicate: Callable[[], bool], timeout_s: float = 180.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.5)
        logs = {p.name: p.read_text(errors="replace")[-3000:] for p in self.services.log_dir.glob("*.log")}
        raise AssertionError(f"timed out waiting for {what}; logs:\n{logs}")

    def progress(self, keys: list[str]) -> dict[str, ScanProgress]:
        return scan_progress(self.instance, keys)

    def wait_checked(self, keys: list[str], timeout_s: float = 180.0) -> dict[str, ScanProgress]:
        def done() -> bool:
            known = set(self.instance.get_dynamic_partitions("scans"))
            return set(keys) <= known and all(p.stage == "checked" for p in self.progress(keys).values())

        self.wait_for(f"scans {keys} to be checked", done, timeout_s)
        return self.progress(keys)


def start_live_instance(base: Path, extra_env: dict[str, str] | None = None) -> LiveInstance:
    home = base / "dagster_home"
    prepare_home(home)
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "COSMIC_DATA_ROOT": str(base / "data"),
        "COSMIC_SETTLE_SECONDS": "0.5",
        **(extra_env or {}),
    }
    settings = Settings.from_env(env)
    settings.beamline_root.mkdir(parents=True, exist_ok=True)
    services = DagsterServices(env=env, log_dir=base / "logs", port=free_port())
    services.start()
    instance = dg.DagsterInstance.from_ref(InstanceRef.from_dir(str(home)))
    return LiveInstance(services, settings, Beamline(settings.beamline_root), instance, env)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveInstance]:
    instance = start_live_instance(tmp_path_factory.mktemp("live"))
    try:
        yield instance
    finally:
        instance.services.stop()
