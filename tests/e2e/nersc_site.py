"""The loopback NERSC site of the profile, deployment and UI tests, and the secret scan."""

from __future__ import annotations

from pathlib import Path

from cosmic_dagster.emulators.site import GLOBUS_SECRET
from cosmic_dagster.emulators.site import LoopbackSite as Site
from tests.e2e.conftest import LiveInstance

__all__ = ["GLOBUS_SECRET", "Site", "secret_free"]


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
