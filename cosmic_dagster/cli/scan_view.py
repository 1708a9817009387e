"""The operator's view of scans over the webserver's GraphQL API: ``status`` (a table, one row
per scan) and ``show`` (everything about one scan: stages, failure reasons, links, parameters).

A failure's reason is the pipeline's own line for the scan (``- <scan>: <asset>: <reason>``, see
:mod:`cosmic_dagster.domain.alerts`) in the failed run's step failure, the same text an alert shows.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from cosmic_dagster import names
from cosmic_dagster.cli.dagster_api import DagsterApi
from cosmic_dagster.domain.alerts import ScanFailure, clip
from cosmic_dagster.domain.launches import launched_by

STAGE_OF = {names.RAW_SCAN: "registered", names.NERSC_COPY: "copied", names.RECONSTRUCTION: "reconstructed"}
CHECKS = ((names.NERSC_COPY, names.COPY_CHECK), (names.RECONSTRUCTION, names.QUALITY_CHECK))
EVENTS_PER_SCAN = 10
FAILED_RUN = (
    "FAILURE",
    "CANCELED",
    "CANCELING",
)  # reruns kept per scan when reading events for many scans at once


@dataclass
class ScanRow:
    scan: str
    stage: str  # detected | registered | copied | reconstructed
    state: str  # done | failed | running | waiting
    reason: str = ""
    when: float | None = None  # epoch seconds of the latest event
    run_id: str | None = None  # the run of the latest event


class _Reasons:
    """Per-scan failure reasons from runs' step failures (each run read once)."""

    def __init__(self, api: DagsterApi):
        self.api = api
        self.runs: dict[str, tuple[list[ScanFailure], list[str]]] = {}

    def __call__(self, run_id: str, key: str, asset: str) -> str:
        if run_id not in self.runs:
            self.runs[run_id] = self.api.step_failures(run_id)
        scans, texts = self.runs[run_id]
        for failure in scans:
            if failure.scan == key:
                return f"{failure.asset}: {clip(failure.error)}"
        return f"{asset}: {clip(' '.join(texts)) or 'the run failed without a step error (see the run)'}"


def scan_rows(api: DagsterApi, keys: Sequence[str]) -> list[ScanRow]:
    """One row per scan: 3 partition-status queries, 3 event queries, and one run query per
    failed or running scan (and one per run that failed them), whatever the archive's size."""
    statuses = {
        asset: {k: set(v) for k, v in api.partition_statuses(asset).items()}
        for asset in names.PIPELINE_ASSETS
    }
    newest: dict[str, dict[str, Any]] = {}
    for asset in names.PIPELINE_ASSETS:
        for event in api.materializations(asset, keys, limit=min(10_000, EVENTS_PER_SCAN * len(keys))):
            if event["timestamp"] > newest.get(event["partition"], {}).get("timestamp", -1.0):
                newest[event["partition"]] = event
    reasons = _Reasons(api)
    rows = []
    for key in keys:
        done = [a for a in names.PIPELINE_ASSETS if key in statuses[a]["materialized"]]
        failed = [a for a in names.PIPELINE_ASSETS if key in statuses[a]["failed"]]
        running = [a for a in names.PIPELINE_ASSETS if key in statuses[a]["in_progress"]]
        row = ScanRow(key, STAGE_OF[done[-1]] if done else "detected", "waiting")
        if key in newest:
            row.when, row.run_id = newest[key]["timestamp"] / 1000, newest[key]["runId"]
        if running or failed:
            asset = (running or failed)[0]
            run = api.latest_run_for_partition(asset, key)
            if run is not None:
                row.when, row.run_id = run["endTime"] or run["startTime"], run["runId"]
            row.state = "running" if running else "failed"
            if not running:
                row.reason = reasons(run["runId"], key, asset) if run else f"{asset} failed"
        elif names.RECONSTRUCTION in done:
            row.state = "done"
        rows.append(row)
    return rows


def _when(epoch: float | None) -> str:
    return dt.datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M:%S") if epoch else "-"


def format_table(rows: Sequence[ScanRow], *, width: int = 80) -> str:
    """A plain-text table (scan, stage reached, state, reason, when) for a terminal."""
    header = ("scan", "stage", "state", "when", "reason")
    cells = [
        (r.scan, r.stage, r.state, _when(r.when), clip(r.reason, width) if r.reason else "") for r in rows
    ]
    widths = [max(len(str(c[i])) for c in [header, *cells]) for i in range(len(header))]
    lines = [
        "  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
        for row in [header, *cells]
    ]
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.state] = counts.get(r.state, 0) + 1
    summary = ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no scans"
    return "\n".join([*lines, "", f"{len(rows)} scan(s): {summary}"])


@dataclass
class ScanDetail:
    scan: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)  # asset -> state, when, run, reason
    checks: dict[str, dict[str, Any]] = field(default_factory=dict)  # check -> status, description
    runs: list[dict[str, Any]] = field(default_factory=list)  # id, job, status, launched_by, link
    links: dict[str, str] = field(default_factory=dict)  # globus_task, job
    file: str | None = None
    preview_path: str | None = None
    parameters: dict[str, Any] | None = None

    def as_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def scan_detail(api: DagsterApi, key: str, ui_url: str) -> ScanDetail:
    detail = ScanDetail(key)
    reasons = _Reasons(api)
    run_ids: list[str] = []
    for asset in names.PIPELINE_ASSETS:
        history = api.materializations(asset, [key], limit=EVENTS_PER_SCAN)
        latest = api.latest_run_for_partition(asset, key)
        run_ids += [
            r for r in [*(e["runId"] for e in history), latest and latest["runId"]] if r and r not in run_ids
        ]
        stage: dict[str, Any] = {"state": "never run"}
        if history and (
            latest is None or latest["runId"] == history[0]["runId"] or latest["status"] == "SUCCESS"
        ):
            stage = {
                "state": "materialized",
                "when": _when(history[0]["timestamp"] / 1000),
                "run": history[0]["runId"],
            }
        elif latest is not None:
            state = "failed" if latest["status"] in FAILED_RUN else "running"
            stage = {
                "state": state,
                "when": _when(latest["endTime"] or latest["startTime"]),
                "run": latest["runId"],
            }
            if state == "failed":
                stage["reason"] = reasons(latest["runId"], key, asset)
        detail.stages[asset] = stage
        meta = history[0]["metadata"] if history else {}
        if asset == names.RAW_SCAN:
            detail.file = meta.get("relpath")
        elif asset == names.NERSC_COPY and meta.get("globus_task"):
            detail.links["globus_task"] = meta["globus_task"]
        elif asset == names.RECONSTRUCTION and meta:
            if meta.get("job"):
                detail.links["job"] = meta["job"]
            detail.preview_path = meta.get("preview_path")
            params = json.loads(meta["parameters"]) if meta.get("parameters") else {}
            detail.parameters = {"engine": meta.get("engine"), **params}
    for asset, check in CHECKS:
        found = api.check_executions(asset, check, key)
        detail.checks[check] = (
            {"status": check_state(found[0]), "description": found[0]["description"]}
            if found
            else {"status": "never run"}
        )
    for run_id in run_ids:
        run = api.run_tags(run_id)
        detail.runs.append(
            {
                "run_id": run_id,
                "job": run["jobName"],
                "status": run["status"],
                "launched_by": launched_by(run["tags"]),
                "link": f"{ui_url.rstrip('/')}/runs/{run_id}",
            }
        )
    return detail


def check_state(execution: dict[str, Any]) -> str:
    """A check execution's status, where a failure at WARN severity (a doubtful reconstruction:
    it blocks nothing, an operator should look) reads ``WARNED``, not ``FAILED``."""
    if execution["status"] == "FAILED" and execution.get("severity") == "WARN":
        return "WARNED"
    return str(execution["status"])


def format_detail(detail: ScanDetail) -> str:
    lines = [f"scan {detail.scan}" + (f"  ({detail.file})" if detail.file else "")]
    lines.append("stages:")
    for asset, stage in detail.stages.items():
        where = f"  {stage.get('when', '')}  run {stage['run'][:8]}" if stage.get("run") else ""
        lines.append(f"  {asset:<15} {stage['state']:<13}{where}")
        if stage.get("reason"):
            lines.append(f"      reason: {stage['reason']}")
    lines.append("checks:")
    for check, result in detail.checks.items():
        why = f": {result['description']}" if result.get("description") else ""
        lines.append(f"  {check:<29} {result['status']}{why}")
    for label, url in detail.links.items():
        lines.append(f"{label.replace('_', ' ')}: {url}")
    if detail.preview_path:
        lines.append(f"preview: {detail.preview_path}")
    if detail.parameters:
        lines.append(f"parameters: {json.dumps(detail.parameters, sort_keys=True)}")
    lines.append("runs:")
    for run in detail.runs:
        lines.append(
            f"  {run['run_id'][:8]}  {run['job']:<20} {run['status']:<8} "
            f"by {run['launched_by']:<9} {run['link']}"
        )
    return "\n".join(lines)
