"""A real Dagster daemon + webserver on a temporary DAGSTER_HOME, shared by a test module; and
the production shape (PostgreSQL, code server, daemon, webserver) on a fresh database."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.instance.ref import InstanceRef

from cosmic_dagster.cli.dagster_api import DagsterApi
from cosmic_dagster.cli.deployment import PostgresSettings, open_instance, start_deployment
from cosmic_dagster.cli.services import DagsterServices, free_port, prepare_home
from cosmic_dagster.config import Settings
from cosmic_dagster.defs.progress import ScanProgress, scan_progress
from tests.conftest import Beamline


@dataclass
class LiveInstance:
    services: DagsterServices
    settings: Settings
    beamline: Beamline
    instance: dg.DagsterInstance
    env: dict[str, str]
    pg: PostgresSettings | None = None

    def stop(self) -> None:
        """Stop the processes; a deployment's database is dropped (one fresh database per test)."""
        self.services.stop()
        self.instance.dispose()
        if self.pg is not None:
            self.pg.drop_database()

    @property
    def api(self) -> DagsterApi:
        return DagsterApi(self.services.url)

    def wait_for(
        self,
        what: str,
        predicate: Callable[[], bool],
        timeout_s: float = 180.0,
        state: Callable[[], str] | None = None,
    ) -> None:
        """Poll ``predicate``; on a timeout fail with ``state()`` (what the test waited on, in its
        own words) and the services' log tails."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.5)
        logs = {p.name: p.read_text(errors="replace")[-3000:] for p in self.services.log_dir.glob("*.log")}
        seen = f"; state: {state()}" if state is not None else ""
        raise AssertionError(f"timed out waiting for {what}{seen}; logs:\n{logs}")

    def run_story(self, run_id: str, events: int = 8) -> str:
        """A run's status and its last events (their type and message), for a failure message."""
        run = self.instance.get_run_by_id(run_id)
        if run is None:
            return f"{run_id}: no such run"
        records = self.instance.get_records_for_run(run_id, ascending=False, limit=events).records
        lines = [
            f"{kind.value if (kind := r.event_log_entry.dagster_event_type) else 'log'}: "
            f"{r.event_log_entry.message[:200]}"
            for r in reversed(records)
        ]
        return f"{run_id} {run.status.value}: " + " | ".join(lines)

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


_databases = itertools.count()


def postgres_or_skip() -> PostgresSettings:
    """A fresh database name on the local server; in CI a missing server fails instead of skipping."""
    db = f"cosmic_test_{os.getpid()}_{next(_databases)}"
    pg = PostgresSettings.from_env({**os.environ, "DAGSTER_PG_DB": db})
    try:
        pg.connect("postgres").close()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required in CI: {exc}")
        pytest.skip(f"no PostgreSQL server: {exc}")
    return pg


def start_deployed_instance(base: Path, extra_env: dict[str, str] | None = None) -> LiveInstance:
    """``cosmic-dagster deploy up`` as a test fixture: deploy/dagster.yaml on a fresh database."""
    pg = postgres_or_skip()
    env = {
        **os.environ,
        **pg.env(),
        "COSMIC_DATA_ROOT": str(base / "data"),
        "COSMIC_SETTLE_SECONDS": "0.5",
        **(extra_env or {}),
    }
    services = start_deployment(base, port=free_port(), code_port=free_port(), env=env)
    instance = open_instance(Path(services.env["DAGSTER_HOME"]), pg)
    settings = Settings.from_env(services.env)
    settings.beamline_root.mkdir(parents=True, exist_ok=True)
    return LiveInstance(
        services, settings, Beamline(settings.beamline_root), instance, dict(services.env), pg
    )


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveInstance]:
    instance = start_live_instance(tmp_path_factory.mktemp("live"))
    try:
        yield instance
    finally:
        instance.stop()
