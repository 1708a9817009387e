"""The loopback NERSC site of the profile, deployment and UI tests, and the secret scan."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cosmic_dagster.emulators.site import GLOBUS_SECRET
from cosmic_dagster.emulators.site import LoopbackSite as Site
from cosmic_dagster.pipeline.flight import CANARY_LABEL
from tests.e2e.conftest import LiveInstance

__all__ = ["GLOBUS_SECRET", "Site", "scan_tasks", "secret_free"]


def scan_tasks(site: Site) -> list[dict[str, Any]]:
    """The Globus tasks that carry scans: not the flight check's canary copies, which its
    schedule makes at 0:00 and 12:00 whatever a test is doing."""
    return [t for t in site.globus.tasks() if not t["label"].startswith(CANARY_LABEL)]


def secret_free(live: LiveInstance, secrets: list[str]) -> None:
    """No secret in any event (messages, metadata, errors), run tag, or log file of the instance."""
    runs = live.instance.get_runs()
    assert runs
    for run in runs:
        assert not any(s in repr(run.tags) for s in secrets)
        for record in live.instance.all_logs(run.run_id):
            text = repr(record)
            assert not any(s in text for s in secrets), f"secret leaked in run {run.run_id}"
    for root in (Path(live.env["DAGSTER_HOME"]), live.services.log_dir):
        for path in root.rglob("*"):
            if path.is_file() and path.suffix in (".log", ".out", ".err", ".txt", ""):
                content = path.read_text(errors="replace")
                assert not any(s in content for s in secrets), f"secret leaked in {path}"
