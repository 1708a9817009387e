"""Where each scan stands, read from a Dagster instance (demo progress, status tables, tests)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from cosmic_dagster import names
from cosmic_dagster.defs.partitions import scans


@dataclass
class ScanProgress:
    key: str
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # asset -> metadata
    checks: dict[str, bool] = field(default_factory=dict)  # check name -> passed

    @property
    def stage(self) -> str:
        if names.RECONSTRUCTION in self.metadata and names.QUALITY_CHECK in self.checks:
            return "checked"
        for asset, stage in (
            (names.RECONSTRUCTION, "reconstructed"),
            (names.NERSC_COPY, "copied"),
            (names.RAW_SCAN, "registered"),
        ):
            if asset in self.metadata:
                return stage
        return "detected"

    @property
    def passed(self) -> bool:
        return self.checks.get(names.COPY_CHECK, False) and self.checks.get(names.QUALITY_CHECK, False)


def _value(v: Any) -> Any:
    return getattr(v, "value", v)


def scan_progress(instance: dg.DagsterInstance, keys: Sequence[str] | None = None) -> dict[str, ScanProgress]:
    keys = list(keys) if keys is not None else instance.get_dynamic_partitions(scans.name)
    out = {key: ScanProgress(key) for key in keys}
    for asset in (names.RAW_SCAN, names.NERSC_COPY, names.RECONSTRUCTION):
        records = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey(asset), asset_partitions=keys), limit=10_000
        ).records
        for record in reversed(records):  # oldest first, so the latest wins
            mat = record.asset_materialization
            if mat is not None and mat.partition in out:
                out[mat.partition].metadata[asset] = {k: _value(v) for k, v in mat.metadata.items()}
    storage = instance.event_log_storage
    for asset, check in ((names.NERSC_COPY, names.COPY_CHECK), (names.RECONSTRUCTION, names.QUALITY_CHECK)):
        history = storage.get_asset_check_execution_history(
            dg.AssetCheckKey(dg.AssetKey(asset), check), limit=10_000
        )
        for record in reversed(history):
            if record.partition in out and record.status.value != "PLANNED":
                out[record.partition].checks[check] = record.status.value == "SUCCEEDED"
    return out
