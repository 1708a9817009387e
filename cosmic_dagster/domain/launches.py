"""Who launched a run, read from its tags (the operator's "why did this run happen?").

Our launchers (watcher, sensor, reconcile, CLI) tag their runs with ``cosmic/submitted-by``; the
UI cannot be made to, so a run without our tag is one somebody launched in the UI, unless Dagster's
own tags say a sensor or schedule of ours launched it (an older run, from before the tag).
"""

from __future__ import annotations

from collections.abc import Mapping

from cosmic_dagster import names


def launched_by(tags: Mapping[str, str]) -> str:
    """One of :data:`names.LAUNCHERS` (an unknown value is returned as it is, never hidden)."""
    if tags.get(names.TAG_SUBMITTED_BY):
        return tags[names.TAG_SUBMITTED_BY]
    if tags.get(names.TAG_SENSOR_NAME):
        return names.BY_SENSOR
    if tags.get(names.TAG_SCHEDULE_NAME):
        return names.BY_SCHEDULE
    return names.BY_UI
