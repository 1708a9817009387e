"""Copies to NERSC through Globus Transfer (the real globus-sdk 4), idempotent across retries and kills.

One ``copy_batch`` call puts its scans into as few transfer tasks as possible (one normally: Globus
runs only 3 tasks per user at a time), with checksum sync, checksum verification and our registered
sha256 as the external checksum of each file, so a copy is verified end to end.

Idempotency rests on one :class:`Ledger` record per submission (kind ``globus_task``, name
``batch:<submission_id>``: the exact task document, its task id, which scans ended verified or
failed), written *before* the submit. A retried step looks its scans up first (one ledger read per
call and one write per batch: a backlog of 1,000 scans costs no 1,000 SQLite commits) and waits on
the existing task. If the worker died between submit and recording the task id, resubmitting the
recorded document with the same ``submission_id`` makes Globus answer with the original task (code
``Duplicate``), so a task is never started twice. A scan recorded as verified and still present at
NERSC is not copied again.

Two Globus pitfalls are handled: ``task_wait`` returns True for FAILED tasks (we read the status),
and a task stuck on FILE_NOT_FOUND / PERMISSION_DENIED stays ACTIVE until its deadline (we cancel
it, blame the file named in its events, and resubmit the rest). Source errors are skipped
(``skip_source_errors``) so a bad scan never blocks the good ones of its batch. A task Globus
suspends (INACTIVE, e.g. expired collection credentials) is canceled with its reason and what to do.

Outages (network errors, 5xx, and 429 beyond the SDK's own retries, honouring ``Retry-After``) are
waited out for ``unreachable_grace_s``. A 409 on submit is read by its code: the pending-task limit
is waited out (backing off, bounded, at WARNING); any other conflict fails the batch at once.
"""

from __future__ import annotations

import hashlib
import logging
import os
import posixpath
import re
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, TypeVar

import globus_sdk
from globus_sdk.transport import RetryConfig

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.scans import ScanPathError, normalize_relpath
from cosmic_dagster.errors import CosmicError
from cosmic_dagster.files import read_private_file
from cosmic_dagster.transfer.globus.endpoints import Endpoint, get_endpoint, load_endpoints
from cosmic_dagster.transfer.protocol import (
    BatchReport,
    Check,
    CopyOutcome,
    SourceFile,
    TransferError,
    TransferItem,
)

log = logging.getLogger(__name__)

TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
LEDGER_KIND = "globus_task"
TASK_URL = "https://app.globus.org/activity/{task_id}"
#: nice_status values that never heal by themselves: cancel instead of waiting for the deadline.
STUCK_CODES = frozenset(
    {
        "FILE_NOT_FOUND",
        "PERMISSION_DENIED",
        "PATH_NOT_FOUND",
        "QUOTA_EXCEEDED",
        "CONSENT_REQUIRED",
        "NOT_A_DIRECTORY",
        "IS_A_DIRECTORY",
    }
)
#: What the operator should do about a task Globus suspended (status INACTIVE), by its nice_status.
INACTIVE_ADVICE = {
    "CREDENTIAL_EXPIRED": (
        "the credentials Globus holds for one of the collections expired: renew them (app.globus.org, "
        "the collection's credentials / consent for this client), then rerun the failed scans"
    ),
}
_INACTIVE_DEFAULT_ADVICE = "see the task's events in the Globus web app, fix the cause, rerun failed scans"
#: A 409 naming the pending-task limit (Globus documents the limit, not its code: match the words).
_PENDING_LIMIT = re.compile(r"pending[\s_.-]*(?:transfer[\s_.-]*|delete[\s_.-]*)?tasks?", re.IGNORECASE)
#: Longest pause between two submits while the pending-task limit is reached.
PENDING_LIMIT_MAX_PAUSE_S = 60.0

_T = TypeVar("_T")


class GlobusCredentialsError(CosmicError, ValueError):
    """Client credentials missing, ambiguous or stored unsafely."""


@dataclass(frozen=True)
class GlobusCredentials:
    """A confidential app's client id and secret (the secret never shows in repr or messages)."""

    client_id: str
    client_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return f"GlobusCredentials(client_id={self.client_id!r}, client_secret=<hidden>)"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> GlobusCredentials:
        """From GLOBUS_CLIENT_ID plus GLOBUS_CLIENT_SECRET or GLOBUS_CLIENT_SECRET_FILE (mode 0600)."""
        client_id = (environ.get("GLOBUS_CLIENT_ID") or "").strip()
        if not client_id:
            raise GlobusCredentialsError("GLOBUS_CLIENT_ID is not set")
        secret, secret_file = environ.get("GLOBUS_CLIENT_SECRET"), environ.get("GLOBUS_CLIENT_SECRET_FILE")
        if secret and secret_file:
            raise GlobusCredentialsError("set only one of GLOBUS_CLIENT_SECRET and GLOBUS_CLIENT_SECRET_FILE")
        if secret_file:
            secret = read_private_file(secret_file, "GLOBUS_CLIENT_SECRET_FILE", GlobusCredentialsError)
        if not secret or not secret.strip():
            raise GlobusCredentialsError(
                "GLOBUS_CLIENT_SECRET (or GLOBUS_CLIENT_SECRET_FILE) is not set or empty"
            )
        return cls(client_id=client_id, client_secret=secret.strip())


def make_transfer_client(
    credentials: GlobusCredentials,
    *,
    transfer_base_url: str | None = None,
    auth_base_url: str | None = None,
    retry_config: RetryConfig | None = None,
) -> globus_sdk.TransferClient:
    """A TransferClient with client-credentials tokens (fetched lazily, renewed on 401, kept in memory).

    Without explicit base URLs the SDK honours GLOBUS_SDK_SERVICE_URL_TRANSFER / _AUTH.
    """
    auth = globus_sdk.ConfidentialAppAuthClient(
        credentials.client_id, credentials.client_secret, base_url=auth_base_url, retry_config=retry_config
    )
    # An already-expired placeholder makes the first token be fetched on the first call, not here:
    # building a client must not need the network (nor fail on bad credentials before a run starts).
    authorizer = globus_sdk.ClientCredentialsAuthorizer(
        auth, TRANSFER_SCOPE, access_token="not-yet-fetched", expires_at=0
    )
    return globus_sdk.TransferClient(
        authorizer=authorizer, base_url=transfer_base_url, retry_config=retry_config
    )


def describe_error(exc: Exception) -> str:
    """A short, secret-free description of a Globus SDK error."""
    if isinstance(exc, globus_sdk.AuthAPIError):
        raw = exc.raw_json if isinstance(exc.raw_json, dict) else {}
        code = exc.code or raw.get("error") or "error"
        return f"Globus Auth refused the client credentials (HTTP {exc.http_status}, {code})"
    if isinstance(exc, globus_sdk.GlobusAPIError):
        if exc.raw_json is None:  # not a Globus error document (a proxy's HTML page, an empty body)
            body = " ".join(exc.text.split())[:200] or "(empty body)"
            return f"Globus answered HTTP {exc.http_status} {exc.http_reason}: {body}"
        return f"Globus answered HTTP {exc.http_status} {exc.code}: {exc.message}"
    if isinstance(exc, globus_sdk.NetworkError):
        return f"Globus unreachable: {type(exc).__name__}"
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class TaskSummary:
    """What a person wants to see about one Globus task (metadata for the asset)."""

    task_id: str
    url: str
    status: str
    files: int
    files_transferred: int
    files_skipped: int
    bytes_transferred: int
    bytes_per_second: int
    seconds: float
    error: str | None = None
    nice_status: str | None = None  # why we canceled it (stuck or suspended), e.g. CREDENTIAL_EXPIRED


@dataclass
class _Tracked:
    """A task this call waits on, with the items of this call it carries."""

    task_id: str
    submission_id: str
    items: list[TransferItem]
    stuck: tuple[str, str | None] | None = None  # (nice_status, culprit source path) when we canceled it
    suspended: bool = False  # Globus had suspended it (INACTIVE) when we canceled it


class GlobusTransfer:
    """The :class:`~cosmic_dagster.transfer.protocol.Transfer` adapter over Globus Transfer."""

    def __init__(
        self,
        client: globus_sdk.TransferClient,
        source: Endpoint,
        destination: Endpoint,
        ledger: Ledger,
        *,
        poll_interval_s: float = 5.0,
        deadline_s: float = 12 * 3600,
        max_files_per_task: int = 10_000,
        max_resubmits: int = 2,
        unreachable_grace_s: float = 300.0,
        collections: Mapping[str, Endpoint] | None = None,
        pending_limit_wait_s: float = 3600.0,
    ):
        if poll_interval_s <= 0 or deadline_s <= 0 or max_files_per_task < 1 or max_resubmits < 0:
            raise ValueError(
                "poll_interval_s and deadline_s must be > 0, max_files_per_task >= 1, max_resubmits >= 0"
            )
        self.client = client
        self.source = source
        self.destination = destination
        # What a flight check lists: every collection of the endpoints file (default: these two).
        self.collections = dict(collections or {e.name: e for e in (source, destination)})
        self.ledger = ledger
        self.poll_interval_s = poll_interval_s
        self.deadline_s = deadline_s
        self.max_files_per_task = max_files_per_task
        self.max_resubmits = max_resubmits
        self.unreachable_grace_s = unreachable_grace_s
        self.pending_limit_wait_s = pending_limit_wait_s
        self.task_summaries: dict[str, TaskSummary] = {}
        self._marks: dict[str, dict[str, str]] = {}  # submission id -> scan key -> "verified"/"failed"
        self._carrier: dict[str, str] = {}  # scan key -> submission id of the task carrying it now

    @classmethod
    def from_config(
        cls,
        endpoints_file: str | Path,
        source_name: str,
        destination_name: str,
        credentials: GlobusCredentials,
        ledger: Ledger,
        *,
        poll_interval_s: float = 5.0,
        deadline_s: float = 12 * 3600,
        transfer_base_url: str | None = None,
        auth_base_url: str | None = None,
        retry_config: RetryConfig | None = None,
        max_files_per_task: int = 10_000,
        unreachable_grace_s: float = 300.0,
        pending_limit_wait_s: float = 3600.0,
    ) -> GlobusTransfer:
        """The adapter from the endpoints file (old config.yml format) and credentials."""
        endpoints = load_endpoints(endpoints_file)
        client = make_transfer_client(
            credentials,
            transfer_base_url=transfer_base_url,
            auth_base_url=auth_base_url,
            retry_config=retry_config,
        )
        return cls(
            client,
            get_endpoint(endpoints, source_name),
            get_endpoint(endpoints, destination_name),
            ledger,
            poll_interval_s=poll_interval_s,
            deadline_s=deadline_s,
            max_files_per_task=max_files_per_task,
            unreachable_grace_s=unreachable_grace_s,
            collections=endpoints,
            pending_limit_wait_s=pending_limit_wait_s,
        )

    # ---- Transfer protocol -----------------------------------------------------------------
    def destination_path(self, relpath: str) -> str:
        return self.destination.path(relpath)

    def check_reachable(self) -> str:
        """List (one entry of) the root of every collection: each must answer.

        A root folder that is not there yet (the first copy creates it) is noted, not an error:
        the collection answered."""
        notes = []
        for name, endpoint in sorted(self.collections.items()):
            try:
                self.client.operation_ls(endpoint.uuid, path=endpoint.root_path.rstrip("/") + "/", limit=1)
                notes.append(name)
            except globus_sdk.TransferAPIError as exc:
                if exc.http_status != 404 and exc.code not in ("ClientError.NotFound", "NotFound"):
                    raise TransferError(
                        f"collection {name} ({endpoint.uuid}): {describe_error(exc)}"
                    ) from None
                notes.append(f"{name} (root {endpoint.root_path} not there yet)")
            except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
                raise TransferError(f"collection {name} ({endpoint.uuid}): {describe_error(exc)}") from None
        return "answered: " + ", ".join(notes)

    def copy_batch(self, items: Sequence[TransferItem], label: str) -> BatchReport:
        started = time.monotonic()
        keys = [item.key for item in items]
        duplicates = sorted(k for k, n in Counter(keys).items() if n > 1)
        if duplicates:
            raise TransferError(f"a batch must not repeat a scan key: {', '.join(duplicates)}")
        self.task_summaries, self._marks, self._carrier = {}, {}, {}
        outcomes: dict[str, CopyOutcome] = {}
        try:
            tracked = self._plan(items, label, outcomes)
            carried = self._run(tracked, label, outcomes)
        except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
            raise TransferError(
                f"Globus copy of {len(items)} scan(s) failed: {describe_error(exc)}"
            ) from None
        finally:
            self._save_marks()
        main = max(carried.items(), key=lambda kv: kv[1], default=(None, 0))[0]
        return BatchReport(
            outcomes={key: outcomes[key] for key in keys},
            seconds=time.monotonic() - started,
            task_id=main,
            task_url=TASK_URL.format(task_id=main) if main else None,
        )

    # ---- pruning (transfer/globus/prune.py) ---------------------------------------------------
    def inspect_sources(self, items: Sequence[TransferItem]) -> dict[str, SourceFile]:
        from cosmic_dagster.transfer.globus import prune

        return self._globus_call("listing the beamline collection", prune.inspect_sources, items)

    def verify_copies(self, items: Sequence[TransferItem]) -> dict[str, Check]:
        from cosmic_dagster.transfer.globus import prune

        return self._globus_call("verifying copies", prune.verify_copies, items)

    def delete_sources(self, items: Sequence[TransferItem]) -> dict[str, Check]:
        from cosmic_dagster.transfer.globus import prune

        return self._globus_call("deleting beamline files", prune.delete_sources, items)

    def forget(self, keys: Sequence[str]) -> None:
        """Remove pruned scans from the batch records; a batch left without scans is dropped."""
        gone = set(keys)
        for name, batch in self.ledger.all(LEDGER_KIND).items():
            items = [i for i in batch.get("items", []) if i["key"] not in gone]
            if len(items) == len(batch.get("items", [])):
                continue
            if not items:
                self.ledger.delete(LEDGER_KIND, name)
                continue
            kept = {i["key"] for i in items}
            self.ledger.put(
                LEDGER_KIND,
                name,
                {
                    **batch,
                    "items": items,
                    "verified": [k for k in batch.get("verified", []) if k in kept],
                    "failed": [k for k in batch.get("failed", []) if k in kept],
                },
            )

    def _globus_call(self, what: str, func: Any, items: Sequence[TransferItem]) -> Any:
        try:
            return func(self, items)
        except (globus_sdk.GlobusAPIError, globus_sdk.NetworkError) as exc:
            raise TransferError(f"{what} ({len(items)} scan(s)): {describe_error(exc)}") from None

    # ---- planning: verified, reattached, new -------------------------------------------------
    def _plan(
        self, items: Sequence[TransferItem], label: str, outcomes: dict[str, CopyOutcome]
    ) -> list[_Tracked]:
        todo: list[TransferItem] = []
        verified: list[TransferItem] = []
        reattach: dict[str, list[TransferItem]] = {}
        batches, latest = self._history()
        for item in items:
            try:
                normalize_relpath(item.relpath)
            except ScanPathError as exc:
                outcomes[item.key] = self._failed(item, str(exc))
                continue
            submission_id, state, entry = latest.get(item.key, ("", "failed", {}))
            if state == "failed" or (entry["relpath"], entry["sha256"]) != (item.relpath, item.sha256):
                todo.append(item)
            elif state == "verified":
                verified.append(item)
            else:
                reattach.setdefault(submission_id, []).append(item)
        present = self._present_at_destination(verified)
        for item in verified:
            if item.key in present:
                outcomes[item.key] = self._outcome(item, seconds=0.0, already_present=True, checksum=True)
            else:
                log.info(
                    "scan %s was verified before but is gone from the destination: copying again", item.key
                )
                todo.append(item)
        tracked: list[_Tracked] = []
        for submission_id, group in reattach.items():
            task = self._reattach(batches[submission_id], group, outcomes)
            if isinstance(task, _Tracked):
                tracked.append(task)
            else:
                todo.extend(task)
        tracked.extend(self._submit_new(todo, label))
        return tracked

    def _history(self) -> tuple[dict[str, dict[str, Any]], dict[str, tuple[str, str, dict[str, Any]]]]:
        """Every recorded batch, and per scan key the latest batch carrying it, its state and entry."""
        batches = {
            record["submission_id"]: record
            for name, record in self.ledger.all(LEDGER_KIND).items()
            if name.startswith("batch:")
        }
        latest: dict[str, tuple[str, str, dict[str, Any]]] = {}
        for batch in sorted(batches.values(), key=lambda b: b.get("created", 0.0)):
            verified, failed = set(batch.get("verified", [])), set(batch.get("failed", []))
            for entry in batch["items"]:
                key = entry["key"]
                state = "verified" if key in verified else "failed" if key in failed else "pending"
                latest[key] = (batch["submission_id"], state, entry)
        return batches, latest

    def _reattach(
        self, batch: dict[str, Any], group: list[TransferItem], outcomes: dict[str, CopyOutcome]
    ) -> _Tracked | list[TransferItem]:
        """The task of an earlier attempt to wait on, or the items to submit anew."""
        submission_id = batch["submission_id"]
        for item in group:
            self._carrier[item.key] = submission_id
        task_id = batch.get("task_id")
        if task_id is None:  # the submit's answer was lost: same document, same submission id
            try:
                task_id = self._submit_recorded(batch)
            except globus_sdk.TransferAPIError as exc:
                if exc.http_status != 400:
                    raise
                log.warning(
                    "earlier submission %s cannot be replayed (%s): new task", submission_id, exc.code
                )
                return group
        try:
            doc = self._get_task(task_id)
        except globus_sdk.TransferAPIError as exc:
            if exc.http_status != 404:
                raise
            log.warning("Globus no longer knows task %s: submitting its scans again", task_id)
            return group
        log.info("reattaching to Globus task %s (%s) for %d scan(s)", task_id, doc["status"], len(group))
        if doc["status"] == "FAILED":  # an earlier attempt failed: keep its successes, resubmit the rest
            done = self._successful_sources(task_id)
            retry = []
            for item in group:
                if self.source.path(item.relpath) in done:
                    outcomes[item.key] = self._verified(item, task_id, doc)
                else:
                    retry.append(item)
            self._summarize(task_id, doc)
            return retry
        return _Tracked(task_id, submission_id, group)

    def _submit_new(self, items: list[TransferItem], label: str) -> list[_Tracked]:
        tracked = []
        for start in range(0, len(items), self.max_files_per_task):
            chunk = items[start : start + self.max_files_per_task]
            tracked.append(self._submit_chunk(chunk, label))
        return tracked

    def _submit_chunk(self, chunk: list[TransferItem], label: str) -> _Tracked:
        """Record the task document under a fresh submission id, then submit it."""
        submission_id = self._patiently("getting a submission id", self.client.get_submission_id)["value"]
        deadline = datetime.now(timezone.utc) + timedelta(seconds=self.deadline_s)
        batch = {
            "submission_id": submission_id,
            "task_id": None,
            "label": _task_label(label, [i.key for i in chunk]),
            "deadline": deadline.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "created": time.time(),
            "items": [
                {"key": i.key, "relpath": i.relpath, "sha256": i.sha256, "size": i.size} for i in chunk
            ],
            "verified": [],
            "failed": [],
        }
        self.ledger.put(LEDGER_KIND, f"batch:{submission_id}", batch)
        for item in chunk:
            self._carrier[item.key] = submission_id
        return _Tracked(self._submit_recorded(batch), submission_id, chunk)

    def _submit_recorded(self, batch: dict[str, Any]) -> str:
        data = globus_sdk.TransferData(
            self.source.uuid,
            self.destination.uuid,
            label=batch["label"],
            submission_id=batch["submission_id"],
            sync_level="checksum",
            verify_checksum=True,
            deadline=batch["deadline"],
            skip_source_errors=True,
            fail_on_quota_errors=True,
        )
        for item in batch["items"]:
            data.add_item(
                self.source.path(item["relpath"]),
                self.destination.path(item["relpath"]),
                external_checksum=item["sha256"],
                checksum_algorithm="SHA256",
            )
        result = self._submit_when_room(data, batch)
        task_id = result["task_id"]
        name = f"batch:{batch['submission_id']}"
        self.ledger.put(
            LEDGER_KIND, name, {**(self.ledger.get(LEDGER_KIND, name) or batch), "task_id": task_id}
        )
        log.info(
            "Globus task %s (%s) carries %d scan(s): %s",
            task_id,
            result.get("code"),
            len(batch["items"]),
            TASK_URL.format(task_id=task_id),
        )
        return task_id

    def _submit_when_room(self, data: globus_sdk.TransferData, batch: dict[str, Any]) -> Any:
        """Submit, waiting (bounded, backing off) while Globus refuses it for the pending-task limit.

        The same submission id makes each retry idempotent. Any other 409 (a conflict we do not
        know how to resolve) is raised at once with the server's message.
        """
        what = f"submitting batch {batch['submission_id']}"
        started = time.monotonic()
        bound = min(self.pending_limit_wait_s, max(_epoch(batch["deadline"]) - time.time(), 0.0))
        refusals = 0
        while True:
            try:
                return self._patiently(what, lambda: self.client.submit_transfer(data))
            except globus_sdk.TransferAPIError as exc:
                if exc.http_status != 409 or not _PENDING_LIMIT.search(f"{exc.code} {exc.message}"):
                    raise
                refusals += 1
                waited = time.monotonic() - started
                if waited >= bound:
                    raise TransferError(
                        f"Globus pending-task limit still reached after {refusals} submit(s) over "
                        f"{waited:.0f} s (bound {bound:.0f} s): {describe_error(exc)}; "
                        "finish or cancel pending tasks of this client, then rerun the failed scans"
                    ) from None
                backoff = self.poll_interval_s * 2 ** (refusals - 1)
                pause = min(backoff, PENDING_LIMIT_MAX_PAUSE_S, bound - waited)
                log.warning(
                    "Globus pending-task limit reached (%s); %s refused %d time(s) in %.0f s, "
                    "retrying in %.1f s, giving up after %.0f s",
                    exc.message,
                    what,
                    refusals,
                    waited,
                    pause,
                    bound,
                )
                time.sleep(max(pause, 0.0))

    def _patiently(self, what: str, call: Callable[[], _T]) -> _T:
        """``call()``, retried through an outage for up to ``unreachable_grace_s``.

        An outage is a network error, a 5xx or a 429 that outlasted the SDK's own retries (we wait
        at least its ``Retry-After``). A 401 right after an outage (the service forgot our token) is
        renewed by the SDK only once per request, and that chance may be spent on connection
        errors: one more request renews it.
        """
        since: float | None = None
        renewed = False
        while True:
            try:
                return call()
            except (globus_sdk.NetworkError, globus_sdk.GlobusAPIError) as exc:
                status = getattr(exc, "http_status", None)
                auth_refused = isinstance(exc, globus_sdk.AuthAPIError)  # our credentials: no use retrying
                forgotten_token = status == 401 and not renewed and not auth_refused
                if not (status is None or status >= 500 or status == 429 or forgotten_token):
                    raise
                renewed = status == 401
                since = since or time.monotonic()
                if time.monotonic() - since > self.unreachable_grace_s:
                    raise
                pause = max(self.poll_interval_s, _retry_after(exc))
                log.warning(
                    "%s: %s; retrying in %.1f s (for up to %.0f s)",
                    what,
                    describe_error(exc),
                    pause,
                    self.unreachable_grace_s,
                )
                time.sleep(pause)

    # ---- waiting and outcomes --------------------------------------------------------------
    def _run(self, tracked: list[_Tracked], label: str, outcomes: dict[str, CopyOutcome]) -> dict[str, int]:
        """Wait on every task, resolve its items, resubmit what a stuck task left undone (bounded)."""
        carried: dict[str, int] = {}
        resubmits = 0
        while tracked:
            for task in tracked:
                carried[task.task_id] = carried.get(task.task_id, 0) + len(task.items)
            docs = self._wait(tracked)
            leftover: list[TransferItem] = []
            for task in tracked:
                leftover.extend(self._resolve(task, docs[task.task_id], outcomes))
            tracked = []
            if leftover and resubmits < self.max_resubmits:
                resubmits += 1
                log.info("resubmitting %d scan(s) left undone by a failed task", len(leftover))
                tracked = self._submit_new(leftover, label)
            else:
                for item in leftover:
                    outcomes[item.key] = self._failed(item, "Globus task failed repeatedly; giving up")
        return carried

    def _wait(self, tracked: list[_Tracked]) -> dict[str, dict[str, Any]]:
        """Poll until every task is final (never trusting ``task_wait``'s bool); cancel stuck ones."""
        pending = {task.task_id: task for task in tracked}
        final: dict[str, dict[str, Any]] = {}
        while True:
            for task_id, task in list(pending.items()):
                doc = self._get_task(task_id)
                if doc["status"] == "ACTIVE" and doc.get("nice_status") in STUCK_CODES:
                    task.stuck = (doc["nice_status"], self._culprit(task))
                    log.warning("task %s is stuck on %s: canceling it", task_id, doc["nice_status"])
                    doc = self._cancel(task_id)
                elif doc["status"] == "INACTIVE":
                    task.stuck, task.suspended = (doc.get("nice_status") or "no reason given", None), True
                    log.error(
                        "task %s was suspended by Globus (INACTIVE, %s): canceling it; %s",
                        task_id,
                        task.stuck[0],
                        INACTIVE_ADVICE.get(task.stuck[0], _INACTIVE_DEFAULT_ADVICE),
                    )
                    doc = self._cancel(task_id)
                if doc["status"] in ("SUCCEEDED", "FAILED"):
                    final[task_id] = doc
                    pending.pop(task_id)
            if not pending:
                return final
            time.sleep(self.poll_interval_s)

    def _get_task(self, task_id: str) -> Any:
        return self._patiently(f"polling task {task_id}", lambda: self.client.get_task(task_id))

    def _cancel(self, task_id: str) -> Any:
        """Cancel a task; its document afterwards."""
        self._patiently(f"canceling task {task_id}", lambda: self.client.cancel_task(task_id))
        return self._get_task(task_id)

    def _culprit(self, task: _Tracked, extra_text: str = "") -> str | None:
        """The source path of this task's items that its error events (or ``extra_text``) name, if any."""
        texts = [extra_text]
        events = self._patiently(
            f"listing the events of task {task.task_id}",
            lambda: list(self.client.task_event_list(task.task_id, limit=100)),
        )
        for event in events:
            if event.get("is_error"):
                texts.append(f"{event.get('details') or ''} {event.get('description') or ''}")
        for text in filter(None, texts):
            for item in task.items:
                source, destination = self.source.path(item.relpath), self.destination.path(item.relpath)
                if any(re.search(re.escape(p) + r"(?![\w.-])", text) for p in (source, destination)):
                    return source
        return None

    def _resolve(
        self, task: _Tracked, doc: dict[str, Any], outcomes: dict[str, CopyOutcome]
    ) -> list[TransferItem]:
        """Per-item outcomes of a final task; returns the items to submit again.

        Items copied are verified, skipped source errors fail alone, and when a failed task names
        the one file to blame, that file fails and the others go into a new task.
        """
        task_id = task.task_id
        done = self._successful_sources(task_id)
        skipped = {
            e["source_path"]: e
            for e in self._patiently(
                f"listing the skipped errors of task {task_id}",
                lambda: list(self.client.paginated.task_skipped_errors(task_id).items()),
            )
        }
        failure = _failure_text(doc, task) if doc["status"] == "FAILED" else None
        summary = self._summarize(task_id, doc, failure, task.stuck[0] if task.stuck else None)
        culprit = None
        if doc["status"] == "FAILED":
            fatal = doc.get("fatal_error") or {}
            if task.stuck is not None:
                culprit = task.stuck[1]
            elif fatal.get("code") not in ("EXPIRED", "CANCELED"):
                culprit = self._culprit(task, fatal.get("description") or "")
        leftover = []
        for item in task.items:
            source = self.source.path(item.relpath)
            if source in done:
                outcomes[item.key] = self._verified(item, task_id, doc)
            elif source in skipped:
                code = skipped[source].get("error_code") or "ERROR"
                outcomes[item.key] = self._failed(
                    item, f"{code} at the source collection: {source} (task {task_id})"
                )
            elif failure is None:  # SUCCEEDED without copying it: checksum sync found it already there
                outcomes[item.key] = self._outcome(item, seconds=summary.seconds, already_present=True)
                self._mark(item, "verified")
            elif culprit is None or source == culprit:
                outcomes[item.key] = self._failed(item, f"{failure}: {source} (task {task_id})")
            else:
                leftover.append(item)
        return leftover

    def _successful_sources(self, task_id: str) -> set[str]:
        return {
            e["source_path"]
            for e in self._patiently(
                f"listing the files task {task_id} copied",
                lambda: list(self.client.paginated.task_successful_transfers(task_id).items()),
            )
        }

    def _summarize(
        self, task_id: str, doc: dict[str, Any], error: str | None = None, nice_status: str | None = None
    ) -> TaskSummary:
        summary = TaskSummary(
            task_id=task_id,
            url=TASK_URL.format(task_id=task_id),
            status=doc["status"],
            files=int(doc.get("files") or 0),
            files_transferred=int(doc.get("files_transferred") or 0),
            files_skipped=int(doc.get("files_skipped") or 0),
            bytes_transferred=int(doc.get("bytes_transferred") or 0),
            bytes_per_second=int(doc.get("effective_bytes_per_second") or 0),
            seconds=_task_seconds(doc),
            error=error or (doc.get("fatal_error") or {}).get("description"),
            nice_status=nice_status,
        )
        self.task_summaries[task_id] = summary
        return summary

    def _verified(self, item: TransferItem, task_id: str, doc: dict[str, Any]) -> CopyOutcome:
        self._mark(item, "verified")
        return self._outcome(item, seconds=_task_seconds(doc), bytes=item.size, checksum=True)

    def _mark(self, item: TransferItem, state: str) -> None:
        """Remember how a scan ended, in the batch that carried it (saved once per batch)."""
        submission_id = self._carrier.get(item.key)
        if submission_id is not None:
            self._marks.setdefault(submission_id, {})[item.key] = state

    def _save_marks(self) -> None:
        for submission_id, marks in self._marks.items():
            name = f"batch:{submission_id}"
            batch = self.ledger.get(LEDGER_KIND, name)
            if batch is None:
                continue
            verified = set(batch.get("verified", [])) | {k for k, v in marks.items() if v == "verified"}
            failed = (
                set(batch.get("failed", [])) | {k for k, v in marks.items() if v == "failed"}
            ) - verified
            self.ledger.put(
                LEDGER_KIND, name, {**batch, "verified": sorted(verified), "failed": sorted(failed)}
            )
        self._marks = {}

    def _outcome(
        self,
        item: TransferItem,
        *,
        seconds: float,
        bytes: int = 0,
        already_present: bool = False,
        checksum: bool = False,
    ) -> CopyOutcome:
        return CopyOutcome(
            key=item.key,
            destination=self.destination_path(item.relpath),
            bytes=bytes,
            seconds=seconds,
            verified=True,
            already_present=already_present,
            checksum=item.sha256 if checksum else None,
            checksum_algorithm="sha256" if checksum else None,
        )

    def _failed(self, item: TransferItem, error: str) -> CopyOutcome:
        self._mark(item, "failed")  # a rerun starts afresh
        try:
            destination = self.destination_path(item.relpath)
        except ScanPathError:
            destination = ""
        return CopyOutcome(
            key=item.key, destination=destination, bytes=0, seconds=0.0, verified=False, error=error
        )

    def _present_at_destination(self, items: list[TransferItem]) -> set[str]:
        """Keys of ``items`` whose file is at the destination with the right size (one ls per folder)."""
        from cosmic_dagster.transfer.globus.listing import GlobusLister

        lister = GlobusLister(self.client, self.destination)
        present: set[str] = set()
        by_folder: dict[str, list[TransferItem]] = {}
        for item in items:
            by_folder.setdefault(posixpath.dirname(item.relpath), []).append(item)
        for folder, group in by_folder.items():
            sizes = {e.name: e.size for e in lister.list_dir(folder) or [] if not e.is_dir}
            present.update(i.key for i in group if sizes.get(posixpath.basename(i.relpath)) == i.size)
        return present


def _task_label(label: str, keys: Sequence[str]) -> str:
    """A valid Globus label (<= 128 chars, no newlines) ending in a digest of the batch's keys."""
    digest = hashlib.sha256("\n".join(sorted(keys)).encode()).hexdigest()[:10]
    clean = re.sub(r"[^A-Za-z0-9 _.,:+=@()/-]", "_", label).strip()[: 128 - 12]
    return f"{clean} [{digest}]".strip()


def _epoch(deadline: str) -> float:
    return _parse_time(deadline).timestamp()


def _task_seconds(doc: Mapping[str, Any]) -> float:
    start, end = doc.get("request_time"), doc.get("completion_time")
    if not start or not end:
        return 0.0
    return max((_parse_time(end) - _parse_time(start)).total_seconds(), 0.0)


def _parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _retry_after(exc: Exception) -> float:
    """The seconds a 429/503 asked us to wait (``Retry-After``), 0 if none or unreadable."""
    headers = getattr(exc, "headers", None) or {}
    try:
        return max(float(headers.get("Retry-After", 0)), 0.0)
    except ValueError:  # an HTTP date: rare from Globus, the poll interval will do
        return 0.0


def _failure_text(doc: Mapping[str, Any], task: _Tracked) -> str:
    if task.stuck is not None and task.suspended:
        reason = task.stuck[0]
        advice = INACTIVE_ADVICE.get(reason, _INACTIVE_DEFAULT_ADVICE)
        return f"Globus suspended the task (INACTIVE, {reason}) and we canceled it: {advice}"
    if task.stuck is not None:
        return f"Globus task stuck on {task.stuck[0]}, canceled instead of waiting for its deadline"
    fatal = doc.get("fatal_error") or {}
    code = fatal.get("code", "FAILED")
    if code == "EXPIRED":
        return "Globus task deadline exceeded before the copy finished"
    if code == "CANCELED":
        return "Globus task was canceled"
    return f"Globus task failed with {code} ({fatal.get('description', 'no description')})"
