"""A loopback NERSC Superfacility API (v1.2) that the real sfapi-client talks to unchanged.

Follows the wire contract in the project's reference notes: private-key-JWT token endpoint,
machine status, account, job submission through a task whose result carries the job id as a JSON
string, job queries through the list endpoint (``kwargs=jobid=a,b`` or ``kwargs=user=u``, squeue or
sacct), cancel, ls/download/upload and command. Jobs run on a simulated scheduler (real processes,
configurable timings and faults) or on a real local Slurm.

Faults are set from Python (:meth:`SfapiEmulator.set_faults`), from ``--faults FILE.json`` or with
``POST /_emulator/faults``; ``GET /_emulator/jobs`` and ``GET /_emulator/requests`` list every
submitted job and count requests per route. The ``/_emulator`` endpoints are unauthenticated and
the command endpoint runs shell commands as the emulator's user (like NERSC runs them as yours):
this is a test and development tool, bound to loopback by default.

CLI: ``python -m cosmic_dagster.emulators.sfapi.server --port 0 --client-id ID --public-key PUB.pem
--allowed-root DIR`` prints ``listening on http://127.0.0.1:PORT`` when ready.
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime, timezone
from email.parser import BytesParser
from email.policy import HTTP
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit
from zoneinfo import ZoneInfo

from cosmic_dagster.domain.processes import stop_on_signals
from cosmic_dagster.emulators.sfapi.auth import TokenIssuer, TokenRequestError, load_public_key
from cosmic_dagster.emulators.sfapi.files import FileArea, FileAreaError
from cosmic_dagster.emulators.sfapi.local_slurm import SlurmScheduler
from cosmic_dagster.emulators.sfapi.sbatch import ScriptError, directives
from cosmic_dagster.emulators.sfapi.scheduler import (
    JobFault,
    Scheduler,
    SimulatedScheduler,
    SubmitError,
    sacct_row,
    squeue_row,
)

API_PREFIX = "/api/v1.2"
MACHINES = ("perlmutter",)
MACHINE_STATES = ("active", "unavailable", "degraded", "other")
#: Request kinds, for counting and for targeting HTTP faults ("*" = any of them).
ROUTES = (
    "token",
    "status",
    "account",
    "submit",
    "task",
    "squeue",
    "sacct",
    "cancel",
    "command",
    "ls",
    "download",
    "upload",
)
#: Fault targets beyond the routes: the polls of a submission's task or of a command's task.
TASK_TARGETS = ("submit-task", "command-task")
FORM_ROUTES = ("submit", "command")
COMMAND_TIMEOUT_S = 60


@dataclass(frozen=True)
class HttpFault:
    """Answer the next ``count`` requests of ``route`` with HTTP ``status``.

    ``route`` is a route, ``*``, or ``submit-task``/``command-task`` (the polls of one kind of task:
    a 401 on the first poll of a submission's task is a token that expired after NERSC took the
    job). Nothing is processed, unless ``after``: then the request takes effect and only its answer
    is lost (a gateway timing out after NERSC accepted a job)."""

    status: int
    count: int = 1
    route: str = "*"
    after: bool = False

    def __post_init__(self) -> None:
        if not 400 <= self.status <= 599:
            raise ValueError(f"HTTP fault status must be 4xx or 5xx, not {self.status}")
        if self.count < 1:
            raise ValueError("HTTP fault count must be >= 1")
        if self.route != "*" and self.route not in ROUTES + TASK_TARGETS:
            raise ValueError(
                f"HTTP fault route {self.route!r}: expected '*' or one of {', '.join(ROUTES + TASK_TARGETS)}"
            )


@dataclass(frozen=True)
class Faults:
    """What goes wrong: machine state, jobs invisible right after submission, refused
    submissions, HTTP error bursts, jobs that end in a failure state, bearer tokens that are issued
    but refused (``refuse_tokens``: a client Iris no longer honours, or a caller's IP it does not
    allow) and downloads answered as text (``is_binary: false``) even when binary was asked for
    (``text_downloads``, for files that are valid UTF-8)."""

    machine_status: str = "active"
    invisible_s: float = 0.0
    submit_error: str | None = None
    http_errors: tuple[HttpFault, ...] = ()
    job_faults: tuple[JobFault, ...] = ()
    refuse_tokens: bool = False
    text_downloads: bool = False

    def __post_init__(self) -> None:
        if self.machine_status not in MACHINE_STATES:
            raise ValueError(
                f"machine_status {self.machine_status!r}: expected one of {', '.join(MACHINE_STATES)}"
            )
        if self.invisible_s < 0:
            raise ValueError("invisible_s must be >= 0")

    @classmethod
    def from_dict(cls, data: dict[str, Any], base: Faults | None = None) -> Faults:
        """``base`` with the given fields replaced; unknown names and bad values raise ValueError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f"unknown fault field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
            )
        values = dict(data)
        try:
            if "http_errors" in values:
                values["http_errors"] = tuple(HttpFault(**item) for item in values["http_errors"])
            if "job_faults" in values:
                values["job_faults"] = tuple(JobFault(**item) for item in values["job_faults"])
        except TypeError as exc:
            raise ValueError(f"bad fault entry: {exc}") from None
        return replace(base or cls(), **values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Reply(Exception):
    """Ends request handling with this HTTP status and JSON body."""

    def __init__(self, status: int, body: Any, headers: dict[str, str] | None = None, after: bool = False):
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or {}
        self.after = after  # an injected fault answered after the request took effect


_API_ROUTES: list[tuple[str, re.Pattern[str], str]] = [
    ("GET", re.compile(r"/status/(?P<machine>[^/]+)"), "status"),
    ("GET", re.compile(r"/account/?"), "account"),
    ("POST", re.compile(r"/compute/jobs/(?P<machine>[^/]+)"), "submit"),
    ("GET", re.compile(r"/compute/jobs/(?P<machine>[^/]+)"), "jobs"),
    ("DELETE", re.compile(r"/compute/jobs/(?P<machine>[^/]+)/(?P<jobid>[^/]+)"), "cancel"),
    ("GET", re.compile(r"/tasks/(?P<task>[^/]+)"), "task"),
    ("POST", re.compile(r"/utilities/command/(?P<machine>[^/]+)"), "command"),
    ("GET", re.compile(r"/utilities/ls/(?P<machine>[^/]+)/(?P<path>.*)"), "ls"),
    ("GET", re.compile(r"/utilities/download/(?P<machine>[^/]+)/(?P<path>.*)"), "download"),
    ("PUT", re.compile(r"/utilities/upload/(?P<machine>[^/]+)/(?P<path>.*)"), "upload"),
]


class SfapiEmulator:
    """The emulator as a background-thread HTTP server (``with SfapiEmulator(...) as emu:``)."""

    def __init__(
        self,
        *,
        client_id: str,
        public_key_pem: bytes | str,
        scheduler: Scheduler | None = None,
        allowed_roots: Sequence[str | Path] = (),
        faults: Faults | None = None,
        token_ttl_s: float = 600,
        host: str = "127.0.0.1",
        port: int = 0,
        request_log: str | Path | None = None,
        user: str | None = None,
        timezone_name: str = "America/Los_Angeles",
        task_pending_polls: int = 1,
    ):
        if not client_id:
            raise ValueError("client_id must not be empty")
        pem = public_key_pem.encode() if isinstance(public_key_pem, str) else public_key_pem
        self._public_key = load_public_key(pem)
        self.client_id = client_id
        self.scheduler: Scheduler = scheduler or SimulatedScheduler()
        self.files = FileArea(list(allowed_roots))
        self._faults = faults or Faults()
        self.token_ttl_s = token_ttl_s
        self.user = user or getpass.getuser()
        self.tz = ZoneInfo(timezone_name)
        self.task_pending_polls = task_pending_polls
        self._request_log = Path(request_log) if request_log else None
        self._lock = threading.Lock()
        self._tasks: dict[str, dict[str, Any]] = {}
        self._submitted_at: dict[str, float] = {}
        self._requests: list[dict[str, Any]] = []
        self._server = ThreadingHTTPServer((host, port), _Handler)
        self._server.daemon_threads = True
        self._server.emulator = self  # type: ignore[attr-defined]
        self._issuer = TokenIssuer(client_id, self._public_key, self.token_url, token_ttl_s)
        self._thread: threading.Thread | None = None

    # --- lifecycle and addresses ---------------------------------------------------------------
    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_base_url(self) -> str:
        return f"{self.url}{API_PREFIX}"

    @property
    def token_url(self) -> str:
        return f"{self.url}/token"

    def start(self) -> SfapiEmulator:
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="sfapi-emulator",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.scheduler.close()

    def __enter__(self) -> SfapiEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test controls ------------------------------------------------------------------------
    @property
    def faults(self) -> Faults:
        return self._faults

    def set_faults(self, **changes: Any) -> Faults:
        """Replace the named fault fields (dicts or HttpFault/JobFault objects for the lists)."""
        plain = {
            k: [asdict(item) if not isinstance(item, dict) else item for item in v]
            if k in ("http_errors", "job_faults")
            else v
            for k, v in changes.items()
        }
        with self._lock:
            self._faults = Faults.from_dict(plain, self._faults)
            return self._faults

    def revoke_tokens(self) -> None:
        """Every token issued so far stops working (server-side expiry)."""
        self._issuer.revoke_all()

    @property
    def tokens_issued(self) -> int:
        return self._issuer.issued

    def jobs(self) -> list[dict[str, Any]]:
        """Every job submitted through this emulator, oldest first."""
        records = {r.jobid: r for r in self.scheduler.records(None)}
        with self._lock:
            order = list(self._submitted_at)
        return [records[j].as_dict() for j in order if j in records]

    def request_counts(self) -> dict[str, int]:
        with self._lock:
            return dict(Counter(r["route"] for r in self._requests))

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self._requests)

    def reset_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # --- request handling -----------------------------------------------------------------------
    def handle(self, handler: BaseHTTPRequestHandler, method: str) -> None:
        started = time.time()
        split = urlsplit(handler.path)
        query = parse_qs(split.query, keep_blank_values=True)
        length = int(handler.headers.get("Content-Length") or 0)
        body = handler.rfile.read(length) if length else b""
        route = "control" if split.path.startswith("/_emulator/") else "unknown"
        headers: dict[str, str] = {}
        try:
            if route == "control":
                status, reply = 200, self._control(method, split.path, body)
            else:
                route, params = self._route(method, split.path, query)
                fault = self._take_http_fault(route, self._task_kind(route, params))
                if fault is not None and not fault.after:
                    raise fault
                status, reply = 200, self._api(route, params, query, body, handler)
                if fault is not None:
                    raise fault
        except _Reply as r:
            status, reply, headers = r.status, r.body, r.headers
        except Exception as exc:
            traceback.print_exc()
            status, reply = 500, {"detail": f"internal emulator error: {type(exc).__name__}"}
        payload = json.dumps(reply).encode()
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(payload)
        if route != "control":
            rows = len(reply.get("output") or []) if route in ("squeue", "sacct") and status == 200 else None
            self._record(started, method, route, split.path, query.get("kwargs", []), status, rows)

    def _record(
        self, started: float, method: str, route: str, path: str, kwargs: list, status: int, rows: int | None
    ) -> None:
        """One request in the log; never headers or bodies (they carry tokens and assertions)."""
        entry = {
            "t": round(started, 4),
            "method": method,
            "route": route,
            "path": path,
            "kwargs": kwargs,
            "status": status,
            "rows": rows,
            "ms": round((time.time() - started) * 1000, 2),
        }
        with self._lock:
            self._requests.append(entry)
            if self._request_log is not None:
                with self._request_log.open("a") as log:
                    log.write(json.dumps(entry) + "\n")

    def _route(self, method: str, path: str, query: dict) -> tuple[str, dict[str, str]]:
        if path == "/token" and method == "POST":
            return "token", {}
        if path.startswith(API_PREFIX + "/"):
            rest = path[len(API_PREFIX) :]
            for verb, pattern, name in _API_ROUTES:
                match = pattern.fullmatch(rest)
                if verb == method and match:
                    params = {k: unquote(v) for k, v in match.groupdict().items()}
                    if params.get("machine", MACHINES[0]) not in MACHINES:
                        raise _Reply(422, {"detail": f"unknown machine {params['machine']!r}"})
                    if name == "jobs":
                        name = "sacct" if _flag(query, "sacct") else "squeue"
                    return name, params
        raise _Reply(404, {"detail": "Not Found"})

    def _task_kind(self, route: str, params: dict[str, str]) -> str | None:
        """``submit-task`` or ``command-task`` for a task poll, else None."""
        if route != "task":
            return None
        with self._lock:
            task = self._tasks.get(params["task"])
        return f"{task['kind']}-task" if task else None

    def _take_http_fault(self, route: str, task_kind: str | None = None) -> _Reply | None:
        """The error reply of the next injected HTTP fault for ``route``, if any (consumed)."""
        with self._lock:
            faults = list(self._faults.http_errors)
            for i, fault in enumerate(faults):
                if fault.route in ("*", route, task_kind):
                    faults[i : i + 1] = [replace(fault, count=fault.count - 1)] if fault.count > 1 else []
                    self._faults = replace(self._faults, http_errors=tuple(faults))
                    headers = {"Retry-After": "1"} if fault.status == 429 else {}
                    description = f"injected HTTP {fault.status}"
                    body = (
                        {"error": "temporarily_unavailable", "error_description": description}
                        if route == "token"
                        else {"detail": description}
                    )
                    return _Reply(fault.status, body, headers, after=fault.after)
        return None

    def _api(self, route: str, params: dict[str, str], query: dict, body: bytes, handler: Any) -> Any:
        if route == "token":
            form = {k: v[0] for k, v in parse_qs(body.decode(), keep_blank_values=True).items()}
            try:
                return self._issuer.token_response(form)
            except TokenRequestError as exc:
                raise _Reply(exc.status, {"error": exc.error, "error_description": exc.description}) from None
        if route == "status":
            return self._status()
        if self._faults.refuse_tokens or not self._issuer.valid(handler.headers.get("Authorization")):
            raise _Reply(401, {"detail": "Not authenticated"})
        form = (
            parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True) if route in FORM_ROUTES else {}
        )
        if route == "account":
            name = query.get("username", [self.user])[0]
            return {
                "uid": os.getuid(),
                "name": name,
                "firstname": "Emulated",
                "lastname": "User",
                "email": "",
            }
        if route == "submit":
            return self._submit(form)
        if route == "task":
            return self._task(params["task"])
        if route in ("squeue", "sacct"):
            return self._jobs(route, query)
        if route == "cancel":
            try:
                self.scheduler.cancel(params["jobid"], os.getuid())
            except SubmitError as exc:
                return {"status": "ERROR", "output": None, "error": str(exc)}
            return {"status": "OK", "output": f"cancelled {params['jobid']}", "error": None}
        if route == "command":
            return self._command(form.get("executable", [""])[0])
        return self._file_op(route, params["path"], query, body, handler)

    def _status(self) -> dict[str, Any]:
        return {
            "name": "perlmutter",
            "full_name": "Perlmutter",
            "description": f"System {self._faults.machine_status}",
            "system_type": "compute",
            "notes": [],
            "status": self._faults.machine_status,
            "updated_at": datetime.now(timezone.utc).isoformat(),
        }

    def _new_task(self, kind: str, result: dict[str, Any]) -> dict[str, Any]:
        task_id = secrets.token_hex(8)
        with self._lock:
            self._tasks[task_id] = {
                "kind": kind,
                "pending": self.task_pending_polls,
                "result": json.dumps(result),
            }
        return {"task_id": task_id, "status": "OK", "error": None}

    def _task(self, task_id: str) -> dict[str, Any]:
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                raise _Reply(404, {"detail": f"task {task_id} not found"})
            if task["pending"] > 0:
                task["pending"] -= 1
                return {"id": task_id, "status": "new", "result": None}
            return {"id": task_id, "status": "completed", "result": task["result"]}

    def _submit(self, form: dict[str, list[str]]) -> dict[str, Any]:
        script = form.get("job", [""])[0]
        is_path = form.get("isPath", ["false"])[0].lower() == "true"
        args = form.get("args", [])
        with self._lock:
            faults = self._faults
            refused = faults.submit_error
            if refused is not None:
                self._faults = replace(faults, submit_error=None)
        if faults.machine_status == "unavailable":
            return self._new_task("submit", {"status": "error", "error": "perlmutter is unavailable"})
        if refused is not None:
            return self._new_task("submit", {"status": "error", "error": refused})
        try:
            if is_path:
                script = self.files.download(script, binary=False)["file"]
            elif args:
                raise SubmitError("args can only be passed with a script path (isPath=true)")
            fault = self._take_job_fault(directives(script).get("job-name") or "")
            jobid = self.scheduler.submit(script, args, self.user, fault)
        except (SubmitError, FileAreaError, ScriptError) as exc:
            return self._new_task("submit", {"status": "error", "error": str(exc)})
        with self._lock:
            self._submitted_at[jobid] = time.time()
        return self._new_task("submit", {"status": "ok", "jobid": jobid})

    def _take_job_fault(self, name: str) -> JobFault | None:
        with self._lock:
            faults = list(self._faults.job_faults)
            for i, fault in enumerate(faults):
                if fault.name_contains in name:
                    faults[i : i + 1] = [replace(fault, count=fault.count - 1)] if fault.count > 1 else []
                    self._faults = replace(self._faults, job_faults=tuple(faults))
                    return fault
        return None

    def _jobs(self, route: str, query: dict) -> dict[str, Any]:
        jobids: list[str] | None = None
        user: str | None = None
        for item in query.get("kwargs", []):
            key, _, value = item.partition("=")
            if key == "jobid":
                jobids = [j for j in value.split(",") if j]
            elif key == "user":
                user = value
            elif key != "partition":
                return {"status": "ERROR", "output": [], "error": f"unsupported kwarg {key!r}"}
        records = self.scheduler.records(jobids)
        now = time.time()
        with self._lock:
            hidden_until = {j: t + self._faults.invisible_s for j, t in self._submitted_at.items()}
        visible = [
            r
            for r in records
            if now >= hidden_until.get(r.jobid, 0)
            and (user is None or r.user == user)
            and (route == "sacct" or not r.terminal)
        ]
        row = sacct_row if route == "sacct" else squeue_row
        return {"status": "OK", "output": [row(r, self.tz, now) for r in visible], "error": None}

    def _command(self, executable: str) -> dict[str, Any]:
        if self._faults.machine_status == "unavailable":
            return self._new_task("command", _command_error("perlmutter is unavailable"))
        cwd = str(self.files.roots[0]) if self.files.roots else None
        try:
            done = subprocess.run(
                ["bash", "-c", executable], cwd=cwd, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            return self._new_task("command", _command_error("command timed out"))
        error = None if done.returncode == 0 else (done.stderr.strip() or f"exit code {done.returncode}")
        return self._new_task(
            "command", {"status": "ok", "output": done.stdout, "error": error, "exit_code": done.returncode}
        )

    def _file_op(self, route: str, path: str, query: dict, body: bytes, handler: Any) -> dict[str, Any]:
        if path.startswith("//"):  # sfapi-client joins ".../perlmutter/" and an absolute path
            path = "/" + path.lstrip("/")
        try:
            if route == "ls":
                return {"status": "OK", "entries": self.files.ls(path), "error": None}
            if route == "download":
                binary = _flag(query, "binary")
                try:
                    answer = self.files.download(path, binary and not self._faults.text_downloads)
                except FileAreaError:
                    if not binary:
                        raise
                    answer = self.files.download(path, True)  # not text: only base64 can carry it
                return {"status": "OK", **answer, "error": None}
            data = _multipart_file(handler.headers.get("Content-Type", ""), body)
            return {"status": "OK", "output": self.files.upload(path, data), "error": None}
        except FileAreaError as exc:
            empty = {"entries": []} if route == "ls" else {}
            return {"status": "ERROR", **empty, "error": str(exc)}

    def _control(self, method: str, path: str, body: bytes) -> Any:
        if method == "GET" and path == "/_emulator/jobs":
            return {"jobs": self.jobs()}
        if method == "GET" and path == "/_emulator/requests":
            return {
                "counts": self.request_counts(),
                "total": len(self.requests()),
                "tokens_issued": self.tokens_issued,
            }
        if path == "/_emulator/faults" and method in ("GET", "POST"):
            if method == "POST":
                try:
                    changes = json.loads(body or b"{}")
                    if not isinstance(changes, dict):
                        raise ValueError("the body must be a JSON object of fault fields")
                    self.set_faults(**changes)
                except ValueError as exc:
                    raise _Reply(400, {"detail": str(exc)}) from None
            return self._faults.as_dict()
        if method == "POST" and path == "/_emulator/revoke-tokens":
            self.revoke_tokens()
            return {"revoked": True}
        raise _Reply(404, {"detail": "Not Found"})


def _command_error(message: str) -> dict[str, Any]:
    return {"status": "error", "output": None, "error": message}


def _flag(query: dict, name: str) -> bool:
    return query.get(name, ["false"])[0].lower() == "true"


def _multipart_file(content_type: str, body: bytes) -> bytes:
    """The ``file`` field of a multipart/form-data body."""
    if not content_type.startswith("multipart/form-data"):
        raise FileAreaError("upload: expected a multipart/form-data body with a 'file' field")
    message = BytesParser(policy=HTTP).parsebytes(f"Content-Type: {content_type}\r\n\r\n".encode() + body)
    for part in message.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            return part.get_payload(decode=True) or b""
    raise FileAreaError("upload: the multipart body has no 'file' field")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 60

    def _dispatch(self) -> None:
        self.server.emulator.handle(self, self.command)  # type: ignore[attr-defined]

    do_GET = do_POST = do_PUT = do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:  # requests go to the JSONL log instead
        pass


# --- CLI -----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m cosmic_dagster.emulators.sfapi.server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = any free port")
    parser.add_argument("--backend", choices=("simulated", "slurm"), default="simulated")
    parser.add_argument("--client-id", required=True)
    parser.add_argument(
        "--public-key", required=True, type=Path, help="PEM file with the client's public key"
    )
    parser.add_argument(
        "--allowed-root", action="append", default=[], help="directory served by ls/download/upload"
    )
    parser.add_argument("--faults", type=Path, help="JSON file of fault fields")
    parser.add_argument("--request-log", type=Path, help="append one JSON line per request")
    parser.add_argument("--token-ttl-s", type=float, default=600)
    parser.add_argument("--queue-wait-s", type=float, default=0.5, help="simulated backend: PENDING time")
    parser.add_argument(
        "--min-run-s", type=float, default=0.0, help="simulated backend: minimum RUNNING time"
    )
    parser.add_argument("--timezone", default="America/Los_Angeles", help="time zone of squeue/sacct times")
    ns = parser.parse_args(argv)
    try:
        faults = Faults.from_dict(json.loads(ns.faults.read_text())) if ns.faults else Faults()
        scheduler: Scheduler = (
            SlurmScheduler()
            if ns.backend == "slurm"
            else SimulatedScheduler(queue_wait_s=ns.queue_wait_s, min_run_s=ns.min_run_s)
        )
        emulator = SfapiEmulator(
            client_id=ns.client_id,
            public_key_pem=ns.public_key.read_bytes(),
            scheduler=scheduler,
            allowed_roots=ns.allowed_root,
            faults=faults,
            token_ttl_s=ns.token_ttl_s,
            host=ns.host,
            port=ns.port,
            request_log=ns.request_log,
            timezone_name=ns.timezone,
        )
    except (OSError, ValueError) as exc:
        parser.error(str(exc))
    stopped = stop_on_signals()  # Ctrl-C, SIGTERM and SIGHUP: stop cleanly (state saved, jobs killed)
    emulator.start()
    print(f"listening on {emulator.url}", flush=True)
    stopped.wait()
    emulator.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
