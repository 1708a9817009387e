"""Task engine of the Globus Transfer emulator: queueing, real copies, retries, deadlines, persistence.

Semantics follow the Transfer API (see reference/globus.md): a task is ACTIVE (queued or running),
then SUCCEEDED or FAILED (failed, canceled or expired), or INACTIVE when Globus suspends it (expired
collection credentials: it waits, suspended, for a cancel or its deadline); only ``max_active``
tasks of one type run per user, the rest wait as ``nice_status="Queued"``; a missing or unreadable
source keeps the task ACTIVE with faults until its deadline unless ``skip_source_errors`` is set;
QUOTA_EXCEEDED and EXTERNAL_CHECKSUM_MISMATCH fail the task at once. Bytes really move, a few files
at a time per task, through one link of the configured bandwidth shared by all tasks, into a
temporary name that is renamed only once verified. Checksums are MD5 unless an item names another algorithm.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import posixpath
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cosmic_dagster.emulators.globus.faults import FaultPlan
from cosmic_dagster.files import write_atomic

log = logging.getLogger(__name__)

SKIPPABLE = ("FILE_NOT_FOUND", "PERMISSION_DENIED", "AMBIGUOUS_PATH")
#: Faults that suspend the whole task (status INACTIVE, nice_status the code) instead of retrying.
SUSPENDING = ("CREDENTIAL_EXPIRED",)
PENDING_LIMIT_CODE = "ClientError.Conflict.PendingTaskLimit"
CHECKSUM_ALGORITHMS = {"MD5": "md5", "SHA1": "sha1", "SHA256": "sha256", "SHA512": "sha512"}
DEFAULT_CHECKSUM = "MD5"  # what Globus uses unless the submission names another algorithm
DEFAULT_DEADLINE_S = 24 * 3600
_CHUNK = 1024 * 1024
_DESCRIPTIONS = {
    "FILE_NOT_FOUND": "file not found",
    "PERMISSION_DENIED": "permission denied",
    "VERIFY_CHECKSUM": "checksum verification failed",
    "QUOTA_EXCEEDED": "quota exceeded",
    "ENDPOINT_ERROR": "endpoint error",
    "CONNECT_FAILED": "could not connect to endpoint",
    "EXTERNAL_CHECKSUM_MISMATCH": "external checksum mismatch",
    "IS_A_DIRECTORY": "is a directory (set recursive)",
    "EXPIRED": "the task deadline was reached",
    "CANCELED": "the task was canceled by the user",
    "CREDENTIAL_EXPIRED": "the credentials for a collection expired",
}


_UNFINISHED = ("ACTIVE", "INACTIVE")


class ApiError(Exception):
    """An error answered to the client as ``{"code", "message"}`` with an HTTP status."""

    def __init__(self, http_status: int, code: str, message: str):
        super().__init__(message)
        self.http_status = http_status
        self.code = code
        self.message = message


def iso_time(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S+00:00")


def event_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d %H:%M:%S+00:00")


def parse_deadline(raw: Any, now: float) -> float:
    if raw is None:
        return now + DEFAULT_DEADLINE_S
    try:
        parsed = datetime.fromisoformat(str(raw).replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, "ClientError.BadRequest", f"Invalid deadline {raw!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


class Collections:
    """Collection id -> local directory; collection path ``P`` is ``LOCALDIR/P``, never outside it."""

    def __init__(self, roots: Mapping[str, str | os.PathLike[str]]):
        self.roots: dict[str, Path] = {}
        for cid, root in roots.items():
            try:
                key = str(uuid.UUID(str(cid)))
            except ValueError:
                raise ValueError(f"collection id {cid!r} is not a UUID") from None
            path = Path(root).resolve()
            if not path.is_dir():
                raise ValueError(f"collection {key}: {path} is not a directory")
            self.roots[key] = path

    def root(self, collection_id: str) -> Path:
        try:
            return self.roots[str(uuid.UUID(str(collection_id)))]
        except (ValueError, KeyError):
            raise ApiError(
                404, "EndpointNotFound", f"No such endpoint or collection: {collection_id}"
            ) from None

    def local(self, collection_id: str, path: str) -> Path:
        """The local file behind a collection path; refuses paths leaving the collection."""
        root = self.root(collection_id)
        if not isinstance(path, str) or not path.startswith(("/", "~")):
            raise ApiError(400, "ClientError.BadRequest", f"Path must be absolute: {path!r}")
        parts = [p for p in path.lstrip("~").split("/") if p not in ("", ".")]
        if ".." in parts:
            raise ApiError(403, "EndpointPermissionDenied", f"Path leaves the collection: {path}")
        local = root.joinpath(*parts)
        real = Path(os.path.realpath(local))
        if real != root and root not in real.parents:
            raise ApiError(403, "EndpointPermissionDenied", f"Path leaves the collection: {path}")
        return local


class Link:
    """A shared network link: every byte of every task queues for ``bytes_per_s`` (None: unlimited)."""

    def __init__(self, bytes_per_s: float | None):
        self.bytes_per_s = bytes_per_s
        self._lock = threading.Lock()
        self._free_at = 0.0

    def send(self, nbytes: int, interrupted: threading.Event, deadline: float) -> bool:
        """Wait until ``nbytes`` went through; False if interrupted or the (epoch) deadline comes first."""
        if not self.bytes_per_s or nbytes <= 0:
            return not interrupted.is_set() and time.time() < deadline
        with self._lock:
            now = time.monotonic()
            self._free_at = max(now, self._free_at) + nbytes / self.bytes_per_s
            done_in = self._free_at - now
        until_deadline = deadline - time.time()
        if interrupted.wait(max(0.0, min(done_in, until_deadline))):
            return False
        return done_in <= until_deadline


@dataclass
class FileJob:
    source: str
    destination: str
    algorithm: str
    external_checksum: str | None = None


@dataclass
class Fault:
    code: str
    path: str
    fatal: bool = False
    skippable: bool = False


_COUNTERS = (
    "files",
    "directories",
    "files_transferred",
    "files_skipped",
    "bytes_transferred",
    "bytes_checksummed",
    "faults",
    "subtasks_total",
    "subtasks_succeeded",
    "subtasks_failed",
    "subtasks_canceled",
    "subtasks_expired",
    "subtasks_skipped_errors",
)


@dataclass
class Task:
    task_id: str
    type: str  # TRANSFER | DELETE
    owner: str
    submission_id: str
    request: dict[str, Any]
    request_time: float
    deadline: float
    status: str = "ACTIVE"
    nice_status: str | None = "Queued"
    started_time: float | None = None
    completion_time: float | None = None
    fatal_error: dict[str, str] | None = None
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    events: list[dict[str, Any]] = field(default_factory=list)
    successful: list[dict[str, str]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    resolved: list[str] = field(default_factory=list)  # source files finished (survives restarts)
    expanded: list[str] = field(default_factory=list)  # items already counted in ``files``
    retrying: int = 0
    wake: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "wake"}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Task:
        return cls(**data)

    @property
    def label(self) -> str | None:
        return self.request.get("label")

    def event(self, code: str, description: str, details: str = "", is_error: bool = False) -> None:
        self.events.append(
            {
                "DATA_TYPE": "event",
                "code": code,
                "description": description,
                "details": details,
                "is_error": is_error,
                "time": event_time(time.time()),
            }
        )

    def document(self, collections: Collections) -> dict[str, Any]:
        req, n = self.request, self.counts
        done = self.status in ("SUCCEEDED", "FAILED")
        elapsed = max((self.completion_time or time.time()) - self.request_time, 1e-3)
        pending = 0 if done else max(n["subtasks_total"] - self._finished_subtasks(), 0)
        is_ok = None if done else self.nice_status in ("OK", "Queued")
        doc: dict[str, Any] = {
            "DATA_TYPE": "task",
            "task_id": self.task_id,
            "type": self.type,
            "status": self.status,
            "nice_status": self.nice_status,
            "nice_status_short_description": _DESCRIPTIONS.get(self.nice_status or "", self.nice_status),
            "nice_status_details": None,
            "nice_status_expires_in": -1 if is_ok else (None if done else 0),
            "is_ok": is_ok,
            "is_paused": False,
            "label": self.label,
            "owner_id": self.owner,
            "username": f"{self.owner}@clients.auth.globus.org",
            "request_time": iso_time(self.request_time),
            "completion_time": iso_time(self.completion_time),
            "deadline": iso_time(self.deadline),
            "sync_level": req.get("sync_level"),
            "verify_checksum": bool(req.get("verify_checksum", False)),
            "skip_source_errors": bool(req.get("skip_source_errors", False)),
            "fail_on_quota_errors": bool(req.get("fail_on_quota_errors", False)),
            "encrypt_data": bool(req.get("encrypt_data", False)),
            "preserve_timestamp": bool(req.get("preserve_timestamp", False)),
            "delete_destination_extra": bool(req.get("delete_destination_extra", False)),
            "recursive_symlinks": "ignore",
            "symlinks": 0,
            "effective_bytes_per_second": int(n["bytes_transferred"] / elapsed),
            "fatal_error": self.fatal_error,
            "subtasks_pending": pending,
            "subtasks_retrying": 0 if done else self.retrying,
            "history_deleted": False,
            "filter_rules": req.get("filter_rules"),
            "canceled_by_admin": None,
            "canceled_by_admin_message": None,
            "command": "API 0.10",
            **n,
        }
        for side, key in (("source", "source_endpoint"), ("destination", "destination_endpoint")):
            ep = req.get(key) if self.type == "TRANSFER" else req.get("endpoint")
            if self.type == "DELETE" and side == "destination":
                ep = None
            doc[f"{side}_endpoint_id"] = ep
            doc[f"{side}_endpoint_display_name"] = f"emulated collection {ep}" if ep else None
        return doc

    def _finished_subtasks(self) -> int:
        n = self.counts
        return sum(n[k] for k in ("subtasks_succeeded", "subtasks_failed", "subtasks_skipped_errors"))


class TaskEngine:
    """Holds every task and runs them: one scheduler thread plus one worker thread per running task."""

    def __init__(
        self,
        collections: Collections,
        faults: FaultPlan,
        *,
        bandwidth_bytes_per_s: float | None = None,
        task_latency_s: float = 0.0,
        retry_interval_s: float = 0.5,
        max_active: int = 3,
        max_pending: int = 100,
        file_concurrency: int = 4,
        state_file: str | os.PathLike[str] | None = None,
    ):
        self.collections = collections
        self.faults = faults
        self.link = Link(bandwidth_bytes_per_s)
        self.task_latency_s = task_latency_s
        self.retry_interval_s = retry_interval_s
        self.max_active = max_active
        self.max_pending = max_pending
        self.file_concurrency = file_concurrency
        self.state_file = Path(state_file) if state_file else None
        self.lock = threading.RLock()
        self._wake = threading.Condition(self.lock)
        self._stopping = threading.Event()
        self._dirty = False
        self.tasks: dict[str, Task] = {}
        self._running: dict[str, threading.Thread] = {}
        self.issued: dict[str, str] = {}  # submission id -> owner
        self.used: dict[str, str] = {}  # submission id -> task id
        self._threads: list[threading.Thread] = []
        self._load()

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        for target in (self._schedule_loop, self._save_loop):
            thread = threading.Thread(target=target, name=f"globus-emu-{target.__name__}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        with self.lock:
            for task in self.tasks.values():
                task.wake.set()
            self._wake.notify_all()
            running = list(self._running.values())
        for thread in [*running, *self._threads]:
            thread.join(timeout=10)
        self._save()

    def _load(self) -> None:
        if not self.state_file or not self.state_file.exists():
            return
        data = json.loads(self.state_file.read_text())
        self.issued = dict(data.get("issued", {}))
        self.used = dict(data.get("used", {}))
        for raw in data.get("tasks", []):
            task = Task.from_json(raw)
            if task.status == "ACTIVE":  # was running when the emulator stopped: queue it again
                task.nice_status, task.started_time = "Queued", None
            self.tasks[task.task_id] = task

    def _save(self) -> None:
        if not self.state_file:
            return
        with self.lock:
            data = {
                "issued": self.issued,
                "used": self.used,
                "tasks": [t.to_json() for t in self.tasks.values()],
            }
            text = json.dumps(data)
            self._dirty = False
        write_atomic(self.state_file, text, unique=True)

    def _save_loop(self) -> None:
        while not self._stopping.wait(0.2):
            if self._dirty:
                self._save()

    def changed(self) -> None:
        self._dirty = True

    # ---- API operations --------------------------------------------------------------------
    def new_submission_id(self, owner: str) -> str:
        sid = str(uuid.uuid4())
        with self.lock:
            self.issued[sid] = owner
            self._save()  # durable before the client can use it
        return sid

    def submit(self, owner: str, body: dict[str, Any], kind: str) -> tuple[Task, bool]:
        """Accept a task (or find the one of a reused submission id: ``(task, True)``)."""
        sid = body.get("submission_id")
        with self.lock:
            if not isinstance(sid, str) or self.issued.get(sid) != owner:
                raise ApiError(400, "ClientError.BadRequest.InvalidSubmissionId", "Unknown submission_id")
            if sid in self.used:
                return self.tasks[self.used[sid]], True
            now = time.time()
            request = _validate(body, kind, self.collections)
            pending = [t for t in self.tasks.values() if t.owner == owner and t.status in _UNFINISHED]
            if len([t for t in pending if t.type == kind]) >= self.max_pending:
                raise ApiError(
                    409,
                    PENDING_LIMIT_CODE,
                    f"At most {self.max_pending} pending {kind.lower()} tasks per user",
                )
            task = Task(
                task_id=str(uuid.uuid4()),
                type=kind,
                owner=owner,
                submission_id=sid,
                request=request,
                request_time=now,
                deadline=parse_deadline(request.get("deadline"), now),
            )
            self.tasks[task.task_id] = task
            self.used[sid] = task.task_id
            self._save()  # a task the client knows of must survive a crash of the emulator
            self._wake.notify_all()
            return task, False

    def get(self, owner: str, task_id: str) -> Task:
        with self.lock:
            task = self.tasks.get(task_id)
            if task is None or task.owner != owner:
                raise ApiError(404, "ClientError.NotFound", f"No task found with id {task_id}")
            return task

    def cancel(self, owner: str, task_id: str) -> str:
        with self.lock:
            task = self.get(owner, task_id)
            if task.status not in _UNFINISHED:
                return "TaskComplete"
            self._finish(task, "FAILED", "CANCELED", "The task was canceled by the user")
            return "Canceled"

    def owned(self, owner: str) -> list[Task]:
        with self.lock:
            return [t for t in self.tasks.values() if t.owner == owner]

    def documents(self) -> list[dict[str, Any]]:
        """Every task of every user, with its submission id (for test assertions)."""
        with self.lock:
            return [
                {**t.document(self.collections), "submission_id": t.submission_id}
                for t in self.tasks.values()
            ]

    # ---- scheduling ------------------------------------------------------------------------
    def _schedule_loop(self) -> None:
        while not self._stopping.is_set():
            with self.lock:
                now = time.time()
                running: dict[tuple[str, str], int] = {}
                for task in self.tasks.values():
                    if task.status == "ACTIVE" and task.started_time is not None:
                        running[(task.owner, task.type)] = running.get((task.owner, task.type), 0) + 1
                for task in self.tasks.values():
                    if task.status == "INACTIVE" and now >= task.deadline:
                        self._finish(task, "FAILED", "EXPIRED", _DESCRIPTIONS["EXPIRED"])
                    if task.status != "ACTIVE" or task.started_time is not None:
                        continue
                    if now >= task.deadline:
                        self._finish(task, "FAILED", "EXPIRED", _DESCRIPTIONS["EXPIRED"])
                        continue
                    slot = (task.owner, task.type)
                    if running.get(slot, 0) < self.max_active:
                        running[slot] = running.get(slot, 0) + 1
                        self._launch(task)
                self._wake.wait(0.1)

    def _launch(self, task: Task) -> None:
        task.started_time = time.time()
        task.nice_status = "OK"
        run = self._run_transfer if task.type == "TRANSFER" else self._run_delete
        thread = threading.Thread(
            target=self._guard, args=(task, run), name=f"task-{task.task_id[:8]}", daemon=True
        )
        self._running[task.task_id] = thread
        self.changed()
        thread.start()

    def _guard(self, task: Task, run: Callable[[Task], None]) -> None:
        try:
            run(task)
        except Exception:  # a bug in the emulator must not hang the client: fail the task visibly
            log.exception("emulator task %s crashed", task.task_id)
            with self.lock:
                if task.status == "ACTIVE":
                    self._finish(task, "FAILED", "INTERNAL_ERROR", "emulator internal error")
        finally:
            with self.lock:
                self._running.pop(task.task_id, None)
                self._wake.notify_all()

    def _finish(self, task: Task, status: str, code: str, description: str) -> None:
        """Move ``task`` to a final state (caller holds the lock)."""
        task.status = status
        task.completion_time = time.time()
        task.nice_status = None
        task.retrying = 0
        if status == "FAILED":
            task.fatal_error = {"code": code, "description": description}
            kind = {"CANCELED": "subtasks_canceled", "EXPIRED": "subtasks_expired"}.get(
                code, "subtasks_failed"
            )
            task.counts[kind] += max(task.counts["subtasks_total"] - task._finished_subtasks(), 0)
        task.event(code, description, is_error=status == "FAILED" and code not in ("CANCELED",))
        task.wake.set()
        self.changed()

    def _interrupted(self, task: Task) -> bool:
        """True when the worker must stop: canceled, expired (then marked so) or emulator stopping."""
        with self.lock:
            if task.status != "ACTIVE" or self._stopping.is_set():
                return True
            if time.time() >= task.deadline:
                self._finish(task, "FAILED", "EXPIRED", _DESCRIPTIONS["EXPIRED"])
                return True
            return False

    def _pause(self, task: Task, seconds: float) -> bool:
        """Sleep, waking for cancel/stop and at the deadline; False if the worker must stop."""
        until = time.time() + seconds
        while True:
            left = min(until, task.deadline) - time.time()
            if left <= 0 or task.wake.wait(left):
                return not self._interrupted(task)

    # ---- transfers -------------------------------------------------------------------------
    def _run_transfer(self, task: Task) -> None:
        if not self._pause(task, self.task_latency_s):
            return
        src_ep, dst_ep = task.request["source_endpoint"], task.request["destination_endpoint"]
        unexpanded = list(task.request["DATA"])
        jobs: list[FileJob] = []
        # Like Globus, a task moves several files at once, so one task alone can fill the link.
        with ThreadPoolExecutor(
            self.file_concurrency, thread_name_prefix=f"files-{task.task_id[:8]}"
        ) as pool:
            while True:
                faulted = False
                for item in list(unexpanded):
                    result = self._expand(task, src_ep, item)
                    if isinstance(result, Fault):
                        faulted = True
                        if not self._record_fault(task, result, item["destination_path"]):
                            unexpanded.remove(item)
                        if task.status != "ACTIVE":
                            return
                        continue
                    unexpanded.remove(item)
                    with self.lock:
                        jobs.extend(j for j in result if j.source not in task.resolved)
                results = list(pool.map(lambda job: self._attempt(task, src_ep, dst_ep, job), jobs))
                if "stop" in results:
                    return
                faulted |= "pending" in results
                jobs = [job for job, result in zip(jobs, results, strict=True) if result == "pending"]
                with self.lock:
                    task.retrying = len(jobs) + len(unexpanded)
                    if not jobs and not unexpanded:
                        if task.skipped:
                            task.event("SKIPPED_ERRORS", f"{len(task.skipped)} source errors were skipped")
                        self._finish(task, "SUCCEEDED", "SUCCEEDED", "The task completed successfully")
                        return
                    if not faulted:
                        task.nice_status = "OK"
                if not self._pause(task, self.retry_interval_s):
                    return

    def _attempt(self, task: Task, src_ep: str, dst_ep: str, job: FileJob) -> str:
        """One try at one file: "resolved", "pending" (retry later) or "stop" (task over/interrupted)."""
        if self._interrupted(task):
            return "stop"
        outcome = self._copy(task, src_ep, dst_ep, job)
        if outcome is None:
            self._interrupted(task)  # marks the task EXPIRED if the deadline stopped the copy
            return "stop"
        if isinstance(outcome, Fault):
            if not self._record_fault(task, outcome, job.destination):
                return "resolved"  # skipped source error
            return "pending" if task.status == "ACTIVE" else "stop"
        with self.lock:
            task.resolved.append(job.source)
        return "resolved"

    def _expand(self, task: Task, src_ep: str, item: dict[str, Any]) -> list[FileJob] | Fault:
        """The files of one submitted item (a directory walked if ``recursive``), counted once."""
        source, destination = item["source_path"], item["destination_path"]
        algorithm = (item.get("checksum_algorithm") or DEFAULT_CHECKSUM).upper()
        try:
            local = self.collections.local(src_ep, source)
        except ApiError:
            return Fault("PERMISSION_DENIED", source, skippable=True)
        if not item.get("recursive"):
            jobs, directories = [FileJob(source, destination, algorithm, item.get("external_checksum"))], 0
        elif not local.is_dir():
            code = "FILE_NOT_FOUND" if not local.exists() else "NOT_A_DIRECTORY"
            return Fault(code, source, skippable=code == "FILE_NOT_FOUND")
        else:
            jobs, directories = [], 0
            for dirpath, dirnames, filenames in os.walk(local):
                dirnames.sort()
                directories += 1
                rel = os.path.relpath(dirpath, local)
                for name in sorted(filenames):
                    sub = name if rel == "." else f"{rel}/{name}"
                    jobs.append(
                        FileJob(posixpath.join(source, sub), posixpath.join(destination, sub), algorithm)
                    )
        with self.lock:
            if source not in task.expanded:
                task.expanded.append(source)
                task.counts["directories"] += directories
                task.counts["files"] += len(jobs)
                task.counts["subtasks_total"] += len(jobs)
                self.changed()
        return jobs

    def _record_fault(self, task: Task, fault: Fault, destination: str) -> bool:
        """Note a fault; True if the file stays pending (retried), False if resolved as skipped."""
        description = _DESCRIPTIONS.get(fault.code, fault.code.lower().replace("_", " "))
        with self.lock:
            if task.status != "ACTIVE":
                return True
            details = f"{fault.code}: {description}: {fault.path}"
            if fault.code in SUSPENDING:  # the worker stops; the task waits for a cancel or its deadline
                task.counts["faults"] += 1
                task.status, task.nice_status = "INACTIVE", fault.code
                task.event(fault.code, description, details, is_error=True)
                self.changed()
                return True
            if fault.fatal:
                task.counts["faults"] += 1
                task.event(fault.code, description, details, is_error=True)
                self._finish(task, "FAILED", fault.code, f"{description}: {fault.path}")
                return True
            if fault.skippable and task.request.get("skip_source_errors"):
                task.skipped.append(
                    {
                        "DATA_TYPE": "skipped_error",
                        "source_path": fault.path,
                        "destination_path": destination,
                        "error_code": fault.code,
                        "error_details": details,
                        "error_time": iso_time(time.time()),
                        "is_directory": False,
                        "is_symlink": False,
                        "is_delete_destination_extra": False,
                    }
                )
                task.counts["subtasks_skipped_errors"] += 1
                task.resolved.append(fault.path)
                self.changed()
                return False
            task.counts["faults"] += 1
            task.nice_status = fault.code
            task.event(fault.code, description, details, is_error=True)
            self.changed()
            return True

    def _copy(self, task: Task, src_ep: str, dst_ep: str, job: FileJob) -> Fault | str | None:
        """Copy one file; a Fault, "copied"/"in-sync", or None if interrupted."""
        req = task.request
        injected = self.faults.for_path(job.source, "source", "transfer")
        if injected and injected.error != "VERIFY_CHECKSUM":
            return self._injected(task, injected.error, job.source, injected.fatal, source=True)
        try:
            src = self.collections.local(src_ep, job.source)
        except ApiError:
            return Fault("PERMISSION_DENIED", job.source, skippable=True)
        if not src.exists():
            return Fault("FILE_NOT_FOUND", job.source, skippable=True)
        if src.is_dir():
            return Fault("IS_A_DIRECTORY", job.source)
        if not os.access(src, os.R_OK):
            return Fault("PERMISSION_DENIED", job.source, skippable=True)
        dst_fault = self.faults.for_path(job.destination, "destination", "transfer")
        if dst_fault:
            return self._injected(task, dst_fault.error, job.destination, dst_fault.fatal, source=False)
        try:
            dst = self.collections.local(dst_ep, job.destination)
        except ApiError:
            return Fault("PERMISSION_DENIED", job.destination)
        size = src.stat().st_size
        if dst.is_file() and self._in_sync(task, src, dst, job.algorithm, req.get("sync_level")):
            with self.lock:
                task.counts["files_skipped"] += 1
                task.counts["subtasks_succeeded"] += 1
                self.changed()
            return "in-sync"
        tmp = dst.with_name(f".{dst.name}.{task.task_id[:8]}.globus-part")
        try:
            dst.parent.mkdir(parents=True, exist_ok=True)
            digest = self._stream(src, tmp, job.algorithm, task)
        except OSError:
            tmp.unlink(missing_ok=True)
            return Fault("PERMISSION_DENIED", job.destination)
        if digest is None:
            tmp.unlink(missing_ok=True)
            return None
        with self.lock:
            task.counts["bytes_transferred"] += size
        if job.external_checksum and job.external_checksum.lower() != digest:
            tmp.unlink(missing_ok=True)
            return Fault("EXTERNAL_CHECKSUM_MISMATCH", job.source, fatal=True)
        if req.get("verify_checksum") or job.external_checksum:
            verified = _hash_file(tmp, job.algorithm) == digest
            with self.lock:
                task.counts["bytes_checksummed"] += size
            if not verified or (injected and injected.error == "VERIFY_CHECKSUM"):
                tmp.unlink(missing_ok=True)
                return Fault("VERIFY_CHECKSUM", job.source)
        if req.get("preserve_timestamp"):
            st = src.stat()
            os.utime(tmp, (st.st_atime, st.st_mtime))
        os.replace(tmp, dst)
        with self.lock:
            task.counts["files_transferred"] += 1
            task.counts["subtasks_succeeded"] += 1
            task.successful.append(
                {
                    "DATA_TYPE": "successful_transfer",
                    "source_path": job.source,
                    "destination_path": job.destination,
                }
            )
            self.changed()
        return "copied"

    def _injected(self, task: Task, code: str, path: str, fatal: bool, *, source: bool) -> Fault:
        quota_fatal = code == "QUOTA_EXCEEDED" and bool(task.request.get("fail_on_quota_errors"))
        skippable = source and code in SKIPPABLE
        return Fault(code, path, fatal=fatal or quota_fatal, skippable=skippable)

    def _in_sync(self, task: Task, src: Path, dst: Path, algorithm: str, level: int | None) -> bool:
        if level is None:
            return False
        s, d = src.stat(), dst.stat()
        if level == 0:
            return True
        if level == 1:
            return s.st_size == d.st_size
        if level == 2:
            return s.st_size == d.st_size and s.st_mtime <= d.st_mtime
        if s.st_size != d.st_size:
            return False
        with self.lock:
            task.counts["bytes_checksummed"] += 2 * s.st_size
        return _hash_file(src, algorithm) == _hash_file(dst, algorithm)

    def _stream(self, src: Path, tmp: Path, algorithm: str, task: Task) -> str | None:
        """Copy through the link into ``tmp``; the source digest, or None if interrupted."""
        hasher = hashlib.new(CHECKSUM_ALGORITHMS[algorithm])
        with open(src, "rb") as fin, open(tmp, "wb") as fout:
            while chunk := fin.read(_CHUNK):
                hasher.update(chunk)
                fout.write(chunk)
                if not self.link.send(len(chunk), task.wake, task.deadline):
                    return None
        return hasher.hexdigest()

    # ---- deletes ---------------------------------------------------------------------------
    def _run_delete(self, task: Task) -> None:
        if not self._pause(task, self.task_latency_s):
            return
        ep = task.request["endpoint"]
        pending = [i["path"] for i in task.request["DATA"] if i["path"] not in task.resolved]
        with self.lock:
            if not task.expanded:
                task.expanded.append("*")
                task.counts["subtasks_total"] = len(pending)
        while True:
            for path in list(pending):
                if self._interrupted(task):
                    return
                fault = self._delete_one(task, ep, path)
                if fault is None or not self._record_fault(task, fault, path):
                    pending.remove(path)
                    with self.lock:
                        task.resolved.append(path)
                        task.counts["subtasks_succeeded"] += fault is None
                if task.status != "ACTIVE":
                    return
            if not pending:
                with self.lock:
                    self._finish(task, "SUCCEEDED", "SUCCEEDED", "The task completed successfully")
                return
            if not self._pause(task, self.retry_interval_s):
                return

    def _delete_one(self, task: Task, ep: str, path: str) -> Fault | None:
        injected = self.faults.for_path(path, "source", "delete")
        if injected:
            return self._injected(task, injected.error, path, injected.fatal, source=True)
        try:
            local = self.collections.local(ep, path)
        except ApiError:
            return Fault("PERMISSION_DENIED", path)
        if not local.exists() and not local.is_symlink():
            return None if task.request.get("ignore_missing") else Fault("FILE_NOT_FOUND", path)
        if local.is_dir() and not local.is_symlink():
            if not task.request.get("recursive"):
                return Fault("IS_A_DIRECTORY", path)
            shutil.rmtree(local)
        else:
            local.unlink()
        with self.lock:
            task.counts["files"] += 1
        return None


def _hash_file(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(CHECKSUM_ALGORITHMS[algorithm])
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _validate(body: dict[str, Any], kind: str, collections: Collections) -> dict[str, Any]:
    """The submitted document checked like the service does (400s with a specific code)."""

    def bad(message: str, code: str = "ClientError.BadRequest") -> ApiError:
        return ApiError(400, code, message)

    expected = "transfer" if kind == "TRANSFER" else "delete"
    if body.get("DATA_TYPE") != expected:
        raise bad(f"DATA_TYPE must be {expected!r}")
    label = body.get("label")
    if label is not None and (
        not isinstance(label, str)
        or len(label) > 128
        or "\n" in label
        or "\r" in label
        or label != label.strip()
    ):
        raise bad("Invalid label: at most 128 characters, no newlines, no leading/trailing whitespace")
    items = body.get("DATA")
    if not isinstance(items, list) or not items:
        raise bad(f"A {expected} requires at least one item", "ClientError.BadRequest.NoTransferItems")
    if kind == "TRANSFER":
        for key in ("source_endpoint", "destination_endpoint"):
            collections.root(body.get(key, ""))
        sync = body.get("sync_level")
        if sync is not None and sync not in (0, 1, 2, 3):
            raise bad(f"Invalid sync_level {sync!r}")
        for item in items:
            if not isinstance(item, dict) or item.get("DATA_TYPE") != "transfer_item":
                raise bad("Every DATA entry must be a transfer_item")
            for key in ("source_path", "destination_path"):
                if not isinstance(item.get(key), str) or not item[key].startswith(("/", "~")):
                    raise bad(f"transfer_item {key} must be an absolute path")
            algorithm = item.get("checksum_algorithm")
            if algorithm is not None and str(algorithm).upper() not in CHECKSUM_ALGORITHMS:
                raise bad(f"Unsupported checksum_algorithm {algorithm!r}")
            if item.get("recursive") and item.get("external_checksum"):
                raise bad("external_checksum cannot be used with a recursive item")
    else:
        collections.root(body.get("endpoint", ""))
        for item in items:
            if not isinstance(item, dict) or item.get("DATA_TYPE") != "delete_item":
                raise bad("Every DATA entry must be a delete_item")
            if not isinstance(item.get("path"), str) or not item["path"].startswith(("/", "~")):
                raise bad("delete_item path must be an absolute path")
    return {k: v for k, v in body.items() if k not in ("DATA_TYPE", "submission_id")}
