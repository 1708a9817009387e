"""A small client for the Dagster webserver's GraphQL API (what the CLI and beamline use).

Only the operations the operators need: register a scan and launch its run, find failed
partitions, launch backfills, follow a run. Errors come back as :class:`GraphQLError` with the
server's message, never as a raw response dump.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import requests

from cosmic_dagster import names
from cosmic_dagster.domain.alerts import ScanFailure
from cosmic_dagster.errors import CosmicError

LOCATION = "cosmic_dagster"
REPOSITORY = "__repository__"
#: What the webserver answers for our definitions while the code location is not loaded (the code
#: server down or restarting).
_UNLOADED_LOCATION_ERRORS = frozenset(
    {"AssetNotFoundError", "PipelineNotFoundError", "RepositoryNotFoundError", "RepositoryLocationNotFound"}
)


class GraphQLError(CosmicError, RuntimeError):
    pass


class DagsterApi:
    def __init__(self, url: str = "http://127.0.0.1:3000", timeout_s: float = 30.0):
        self.url = url.rstrip("/") + "/graphql"
        self.timeout_s = timeout_s

    def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = requests.post(
                self.url, json={"query": query, "variables": variables or {}}, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise GraphQLError(f"cannot reach the Dagster webserver at {self.url}: {exc}") from None
        if response.status_code != 200:
            raise GraphQLError(f"{self.url} answered HTTP {response.status_code}: {response.text[:300]}")
        body = response.json()
        if body.get("errors"):
            raise GraphQLError("; ".join(e.get("message", str(e)) for e in body["errors"]))
        return body["data"]

    def _ok(self, result: dict[str, Any], success: str) -> dict[str, Any]:
        """``result`` if it is ``success``; else a :class:`GraphQLError` with the server's message,
        or, for a definition "not found" while the code location is not loaded, with why not."""
        kind = result.get("__typename")
        if kind != success:
            if kind in _UNLOADED_LOCATION_ERRORS and (why := self.location_error()):
                raise GraphQLError(f"the webserver has not loaded code location {LOCATION!r}: {why}")
            raise GraphQLError(f"{kind}: {result.get('message') or kind}")
        return result

    def add_partition(self, partitions_def: str, key: str) -> None:
        data = self.execute(
            """mutation($repo: RepositorySelector!, $def: String!, $key: String!) {
              addDynamicPartition(repositorySelector: $repo, partitionsDefName: $def, partitionKey: $key) {
                __typename ... on PythonError { message } ... on UnauthorizedError { message }
                ... on DuplicateDynamicPartitionError { partitionName }
              }}""",
            {"repo": _repo(), "def": partitions_def, "key": key},
        )["addDynamicPartition"]
        if data["__typename"] not in ("AddDynamicPartitionSuccess", "DuplicateDynamicPartitionError"):
            raise GraphQLError(f"{data['__typename']}: {data.get('message')}")

    def launch_run(
        self,
        job: str,
        *,
        partition_key: str | None,
        run_config: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
        asset_keys: Sequence[str] | None = None,
    ) -> str:
        """Launch ``job`` (for one scan, or ``partition_key=None`` for an unpartitioned job)."""
        all_tags = {**({names.TAG_PARTITION: partition_key} if partition_key else {}), **(tags or {})}
        params: dict[str, Any] = {
            "selector": {**_repo(), "jobName": job},
            "runConfigData": run_config or {},
            "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in all_tags.items()]},
        }
        if asset_keys:
            params["selector"]["assetSelection"] = [{"path": [k]} for k in asset_keys]
        data = self.execute(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } }
                ... on InvalidSubsetError { message } ... on PipelineNotFoundError { message }
                ... on InvalidStepError { invalidStepKey } ... on InvalidOutputError { invalidOutputName }
              }}""",
            {"p": params},
        )["launchRun"]
        if data["__typename"] == "RunConfigValidationInvalid":
            raise GraphQLError("invalid run config: " + "; ".join(e["message"] for e in data["errors"]))
        return self._ok(data, "LaunchRunSuccess")["run"]["runId"]

    def partition_statuses(self, asset: str) -> dict[str, list[str]]:
        data = self.execute(
            """query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { __typename
                ... on AssetNode { assetPartitionStatuses { __typename
                  ... on DefaultPartitionStatuses { materializedPartitions failedPartitions
                      unmaterializedPartitions materializingPartitions } } } } }""",
            {"k": {"path": [asset]}},
        )["assetNodeOrError"]
        self._ok(data, "AssetNode")
        statuses = data["assetPartitionStatuses"]
        failed, running = statuses["failedPartitions"], statuses["materializingPartitions"]
        # Dagster's "unmaterialized" also holds the failed and running ones; the UI's Missing
        # does not: missing here is what the UI counts (never attempted, nothing running).
        taken = set(failed) | set(running)
        return {
            "materialized": statuses["materializedPartitions"],
            "failed": failed,
            "missing": [k for k in statuses["unmaterializedPartitions"] if k not in taken],
            "in_progress": running,
        }

    def location_error(self) -> str | None:
        """Why the webserver has not loaded our code location, or None once it has.

        After the code server restarts, the webserver answers every asset query "not found" until
        it notices and reloads the location (a second or two; longer if it had given the server up).
        """
        data = self.execute(
            """query($name: String!) { workspaceLocationEntryOrError(name: $name) { __typename
                ... on WorkspaceLocationEntry { loadStatus locationOrLoadError { __typename
                  ... on PythonError { message } } }
                ... on PythonError { message } } }""",
            {"name": LOCATION},
        )["workspaceLocationEntryOrError"]
        if data is None:
            return "the workspace has no such location"
        entry = self._ok(data, "WorkspaceLocationEntry")
        location = entry["locationOrLoadError"] or {}
        if entry["loadStatus"] != "LOADED":
            return "it is loading"
        if location.get("__typename") != "RepositoryLocation":
            message = (location.get("message") or "").strip().split("\n")[0] or "no location"
            return f"{message} (is the code server up?)"
        return None

    def partition_keys(self) -> list[str]:
        """All scan keys in registration order (the order backfill ranges use)."""
        data = self.execute(
            """query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) { __typename
                ... on AssetNode { partitionKeys } } }""",
            {"k": {"path": [names.RAW_SCAN]}},
        )["assetNodeOrError"]
        return self._ok(data, "AssetNode")["partitionKeys"]

    def launch_backfill(
        self, partition_keys: Sequence[str], assets: Sequence[str], tags: dict[str, str] | None = None
    ) -> str:
        data = self.execute(
            """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
                __typename ... on LaunchBackfillSuccess { backfillId }
                ... on PythonError { message } ... on UnauthorizedError { message }
                ... on InvalidSubsetError { message } ... on PartitionSetNotFoundError { message }
              }}""",
            {
                "p": {
                    "partitionNames": list(partition_keys),
                    "assetSelection": [{"path": [a]} for a in assets],
                    "tags": [{"key": k, "value": v} for k, v in (tags or {}).items()],
                }
            },
        )["launchPartitionBackfill"]
        return self._ok(data, "LaunchBackfillSuccess")["backfillId"]

    def terminate_run(self, run_id: str) -> None:
        data = self.execute(
            """mutation($id: String!) { terminateRun(runId: $id) { __typename
                ... on TerminateRunFailure { message } ... on RunNotFoundError { message }
                ... on PythonError { message } ... on UnauthorizedError { message } } }""",
            {"id": run_id},
        )["terminateRun"]
        self._ok(data, "TerminateRunSuccess")

    def run_status(self, run_id: str) -> str:
        data = self.execute(
            """query($id: ID!) { runOrError(runId: $id) { __typename ... on Run { status }
                ... on RunNotFoundError { message } ... on PythonError { message } } }""",
            {"id": run_id},
        )["runOrError"]
        return self._ok(data, "Run")["status"]

    def launch_job(
        self, job: str, *, run_config: dict[str, Any] | None = None, tags: dict[str, str] | None = None
    ) -> str:
        """One run of an unpartitioned job (prune, reconcile)."""
        data = self.execute(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } }
                ... on PipelineNotFoundError { message } ... on RunConflict { message }
              }}""",
            {
                "p": {
                    "selector": {**_repo(), "jobName": job},
                    "runConfigData": run_config or {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
                }
            },
        )["launchRun"]
        if data["__typename"] == "RunConfigValidationInvalid":
            raise GraphQLError("invalid run config: " + "; ".join(e["message"] for e in data["errors"]))
        return self._ok(data, "LaunchRunSuccess")["run"]["runId"]

    def output_metadata(self, run_id: str) -> dict[str, Any]:
        """The metadata of the step outputs of a finished run (a job's report: counts, totals)."""
        data = self.execute(
            """query($id: ID!) { logsForRun(runId: $id) { __typename
                ... on EventConnection { events { __typename
                  ... on ExecutionStepOutputEvent { metadataEntries { __typename label
                    ... on IntMetadataEntry { intValue } ... on FloatMetadataEntry { floatValue }
                    ... on TextMetadataEntry { text } ... on BoolMetadataEntry { boolValue } } } } }
                ... on RunNotFoundError { message } ... on PythonError { message } } }""",
            {"id": run_id},
        )["logsForRun"]
        out: dict[str, Any] = {}
        for event in self._ok(data, "EventConnection")["events"]:
            for entry in event.get("metadataEntries") or []:
                values = [entry.get(k) for k in ("intValue", "floatValue", "text", "boolValue")]
                out[entry["label"]] = next((v for v in values if v is not None), None)
        return out

    # --- used by the push trigger (cosmic_dagster.cli.watch) -----------------------------------------
    def claim_partition(self, partitions_def: str, key: str) -> bool:
        """Add a dynamic partition; True if this call added it, False if it already existed."""
        data = self.execute(
            """mutation($repo: RepositorySelector!, $def: String!, $key: String!) {
              addDynamicPartition(repositorySelector: $repo, partitionsDefName: $def, partitionKey: $key) {
                __typename ... on PythonError { message } ... on UnauthorizedError { message }
              }}""",
            {"repo": _repo(), "def": partitions_def, "key": key},
        )["addDynamicPartition"]
        if data["__typename"] == "DuplicateDynamicPartitionError":
            return False
        self._ok(data, "AddDynamicPartitionSuccess")
        return True

    def newest_partition_keys(self, asset: str, limit: int) -> list[str]:
        """The ``limit`` most recently added partition keys of ``asset``, oldest first."""
        data = self.execute(
            """query($k: AssetKeyInput!, $limit: Int!) { assetNodeOrError(assetKey: $k) { __typename
                ... on AssetNode { partitionKeyConnection(limit: $limit, ascending: false) { results } }
              } }""",
            {"k": {"path": [asset]}, "limit": limit},
        )["assetNodeOrError"]
        return list(reversed(self._ok(data, "AssetNode")["partitionKeyConnection"]["results"]))

    def launch_scans(self, job: str, keys: Sequence[str], tags: dict[str, str] | None = None) -> str:
        """One run of ``job`` over ``keys`` (one partition, or a range of keys added contiguously)."""
        if not keys:
            raise ValueError("launch_scans needs at least one partition key")
        if len(keys) == 1:
            return self.launch_run(job, partition_key=keys[0], tags=tags)
        range_tags = {
            names.TAG_RANGE_START: keys[0],
            names.TAG_RANGE_END: keys[-1],
            **(tags or {}),
        }
        data = self.execute(
            """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
                __typename ... on LaunchRunSuccess { run { runId } }
                ... on PythonError { message } ... on InvalidSubsetError { message }
                ... on PipelineNotFoundError { message } ... on RunConflict { message }
              }}""",
            {
                "p": {
                    "selector": {**_repo(), "jobName": job},
                    "runConfigData": {},
                    "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in range_tags.items()]},
                }
            },
        )["launchRun"]
        return self._ok(data, "LaunchRunSuccess")["run"]["runId"]

    def run_ids_with_tags(self, tags: dict[str, str], limit: int = 100) -> list[str]:
        data = self.execute(
            """query($f: RunsFilter!, $limit: Int!) { runsOrError(filter: $f, limit: $limit) { __typename
                ... on Runs { results { runId } } ... on PythonError { message }
                ... on InvalidPipelineRunsFilterError { message } } }""",
            {"f": {"tags": [{"key": k, "value": v} for k, v in tags.items()]}, "limit": limit},
        )["runsOrError"]
        return [run["runId"] for run in self._ok(data, "Runs")["results"]]

    # --- the operator's view of scans (cosmic_dagster.cli.scan_view) ----------------------------------
    def materializations(self, asset: str, partitions: Sequence[str], limit: int) -> list[dict[str, Any]]:
        """Materializations of ``asset`` for ``partitions``, newest first: ``partition``, ``runId``,
        ``timestamp`` (ms) and ``metadata`` (label -> plain value)."""
        data = self.execute(
            """query($k: AssetKeyInput!, $p: [String!], $limit: Int!) { assetOrError(assetKey: $k) {
                __typename ... on Asset { assetEventHistory(partitions: $p, limit: $limit,
                  eventTypeSelectors: [MATERIALIZATION]) { results { __typename
                    ... on MaterializationEvent { partition runId timestamp
                      metadataEntries { ...M } } } } } } }
              fragment M on MetadataEntry { label __typename
                ... on TextMetadataEntry { text } ... on IntMetadataEntry { intValue }
                ... on FloatMetadataEntry { floatValue } ... on BoolMetadataEntry { boolValue }
                ... on UrlMetadataEntry { url } ... on PathMetadataEntry { path }
                ... on JsonMetadataEntry { jsonString } }""",
            {"k": {"path": [asset]}, "p": list(partitions), "limit": limit},
        )["assetOrError"]
        if data["__typename"] == "AssetNotFoundError":
            return []
        return [
            {
                "partition": e["partition"],
                "runId": e["runId"],
                "timestamp": float(e["timestamp"]),
                "metadata": {m["label"]: _metadata_value(m) for m in e["metadataEntries"]},
            }
            for e in self._ok(data, "Asset")["assetEventHistory"]["results"]
        ]

    def latest_run_for_partition(self, asset: str, partition: str) -> dict[str, Any] | None:
        """The newest run planned to materialize ``asset`` for ``partition`` (what the UI's
        partition page links): ``runId``, ``status``, ``startTime``/``endTime`` (s), ``tags``."""
        data = self.execute(
            """query($k: AssetKeyInput!, $p: String!) { assetNodeOrError(assetKey: $k) { __typename
                ... on AssetNode { latestRunForPartition(partition: $p) {
                  runId status startTime endTime tags { key value } } } } }""",
            {"k": {"path": [asset]}, "p": partition},
        )["assetNodeOrError"]
        run = self._ok(data, "AssetNode")["latestRunForPartition"]
        return {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}} if run else None

    def check_executions(
        self, asset: str, check: str, partition: str, limit: int = 1
    ) -> list[dict[str, Any]]:
        """The latest executions of a check for one scan: ``status``, ``runId``, ``description``,
        ``severity`` (of a failure: ``ERROR``, or ``WARN`` for one that blocks nothing)."""
        data = self.execute(
            """query($k: AssetKeyInput!, $c: String!, $p: String, $limit: Int!) {
                assetCheckExecutions(assetKey: $k, checkName: $c, partition: $p, limit: $limit) {
                  runId status timestamp evaluation { success description severity } } }""",
            {"k": {"path": [asset]}, "c": check, "p": partition, "limit": limit},
        )["assetCheckExecutions"]
        return [
            {
                "runId": e["runId"],
                "status": e["status"],
                "timestamp": e["timestamp"],
                "description": (e["evaluation"] or {}).get("description"),
                "severity": (e["evaluation"] or {}).get("severity"),
            }
            for e in data
        ]

    def step_failures(self, run_id: str) -> tuple[list[ScanFailure], list[str]]:
        """A run's failed scans, as its pipeline step recorded them, and its other step failure texts."""
        data = self.execute(
            """query($id: ID!) { logsForRun(runId: $id) { __typename
                ... on EventConnection { events { __typename
                  ... on ExecutionStepFailureEvent { error { message } failureMetadata { description
                      metadataEntries { label ... on JsonMetadataEntry { jsonString } } } } } }
                ... on RunNotFoundError { message } ... on PythonError { message } } }""",
            {"id": run_id},
        )["logsForRun"]
        scans: list[ScanFailure] = []
        texts: list[str] = []
        for event in self._ok(data, "EventConnection")["events"]:
            if event["__typename"] != "ExecutionStepFailureEvent":
                continue
            meta = event.get("failureMetadata") or {}
            recorded = [
                json.loads(entry["jsonString"])
                for entry in meta.get("metadataEntries") or []
                if entry.get("label") == names.META_SCAN_FAILURES and entry.get("jsonString")
            ]
            if recorded:
                scans += [ScanFailure(**failure) for failure in recorded[0]]
            else:
                texts.append(meta.get("description") or (event.get("error") or {}).get("message") or "")
        return scans, texts

    def run_tags(self, run_id: str) -> dict[str, Any]:
        """A run's job, status, start time (s) and tags."""
        data = self.execute(
            """query($id: ID!) { runOrError(runId: $id) { __typename
                ... on Run { jobName status startTime tags { key value } }
                ... on RunNotFoundError { message } ... on PythonError { message } } }""",
            {"id": run_id},
        )["runOrError"]
        run = self._ok(data, "Run")
        return {**run, "tags": {t["key"]: t["value"] for t in run["tags"]}}


def _metadata_value(entry: dict[str, Any]) -> Any:
    for field in ("text", "intValue", "floatValue", "boolValue", "url", "path", "jsonString"):
        if field in entry:
            return entry[field]
    return None


def _repo() -> dict[str, str]:
    return {"repositoryLocationName": LOCATION, "repositoryName": REPOSITORY}
