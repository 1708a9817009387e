"""Globus Transfer + Auth emulator: a loopback HTTP service the real globus-sdk 4 talks to unchanged.

Point the SDK at it with ``GLOBUS_SDK_SERVICE_URL_TRANSFER=http://127.0.0.1:PORT/`` and
``GLOBUS_SDK_SERVICE_URL_AUTH`` likewise (or ``base_url=``). It serves the client-credentials token
endpoint (``POST /v2/oauth2/token``) and the Transfer v0.10 calls of reference/globus.md, maps
collection ids to local directories and really copies bytes (see :mod:`globus_tasks`).

Test helpers live under ``/_emulator/``: ``GET tasks`` (every task, for "no duplicate" checks),
``GET calls`` (the API calls received), ``GET|POST|DELETE faults`` (see :mod:`globus_faults`).

CLI::

    python -m cosmic_dagster.emulators.globus.server --port 0 --collection UUID=DIR \\
        --client ID:SECRET [--bandwidth-mbps X] [--task-latency-s Y] [--state-file F] [--faults F.json]
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import grp
import hmac
import json
import logging
import os
import pwd
import re
import secrets
import socket
import stat
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cosmic_dagster.domain.processes import stop_on_signals
from cosmic_dagster.emulators.globus.faults import (
    CallFault,
    FaultPlan,
    FaultSpecError,
    PathFault,
    parse_rules,
)
from cosmic_dagster.emulators.globus.tasks import (
    ApiError,
    Collections,
    Task,
    TaskEngine,
    event_time,
)

log = logging.getLogger(__name__)

TRANSFER_SCOPE = "urn:globus:auth:scope:transfer.api.globus.org:all"
TOKEN_LIFETIME_S = 172800
_MARKER_PAGE = 100  # successful_transfers / skipped_errors page size, small so clients must page

Reply = tuple[int, dict[str, Any]]


class RateLimiter:
    """At most ``limit`` Transfer requests per user in any 10 s window (Globus: 20 req/s)."""

    WINDOW_S = 10.0

    def __init__(self, limit: int | None):
        self.limit = limit
        self._lock = threading.Lock()
        self._seen: dict[str, deque[float]] = {}

    def allow(self, user: str) -> bool:
        if not self.limit:
            return True
        now = time.monotonic()
        with self._lock:
            seen = self._seen.setdefault(user, deque())
            while seen and seen[0] <= now - self.WINDOW_S:
                seen.popleft()
            if len(seen) >= self.limit:
                return False
            seen.append(now)
            return True


class EmulatorServer:
    """The emulator in a background thread: ``with EmulatorServer(...) as emu: emu.url``."""

    def __init__(
        self,
        collections: Mapping[str, str | os.PathLike[str]],
        clients: Mapping[str, str],
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        bandwidth_mbps: float | None = None,
        task_latency_s: float = 0.0,
        retry_interval_s: float = 0.5,
        max_active_tasks: int = 3,
        max_pending_tasks: int = 100,
        file_concurrency: int = 4,
        rate_limit_per_10s: int | None = 200,
        state_file: str | os.PathLike[str] | None = None,
        faults: Iterable[CallFault | PathFault | Mapping[str, Any]] = (),
    ):
        if not clients:
            raise ValueError("the emulator needs at least one client (id -> secret)")
        if bandwidth_mbps is not None and bandwidth_mbps <= 0:
            raise ValueError(f"bandwidth_mbps must be > 0, got {bandwidth_mbps}")
        if task_latency_s < 0 or retry_interval_s <= 0 or file_concurrency < 1:
            raise ValueError("task_latency_s must be >= 0, retry_interval_s > 0, file_concurrency >= 1")
        self.host, self.requested_port = host, port
        self.clients = dict(clients)
        self.faults = FaultPlan()
        self.faults.add(*faults)
        self.collections = Collections(collections)
        self.engine = TaskEngine(
            self.collections,
            self.faults,
            bandwidth_bytes_per_s=bandwidth_mbps * 1e6 / 8 if bandwidth_mbps else None,
            task_latency_s=task_latency_s,
            retry_interval_s=retry_interval_s,
            max_active=max_active_tasks,
            max_pending=max_pending_tasks,
            file_concurrency=file_concurrency,
            state_file=state_file,
        )
        self.rate_limiter = RateLimiter(rate_limit_per_10s)
        self._tokens: dict[str, tuple[str, float]] = {}  # access token -> (client id, expiry)
        self._tokens_lock = threading.Lock()
        self._calls: deque[dict[str, Any]] = deque(maxlen=100_000)
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle -------------------------------------------------------------------------
    def start(self) -> EmulatorServer:
        self._httpd = _Server((self.host, self.requested_port), _Handler, self)
        self.engine.start()
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.1,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.close_all()
            self._httpd = None
        self.engine.stop()

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("the emulator is not running")
        return self._httpd.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    # ---- test helpers ----------------------------------------------------------------------
    def inject(self, *rules: CallFault | PathFault | Mapping[str, Any]) -> None:
        self.faults.add(*rules)

    def clear_faults(self) -> None:
        self.faults.clear()

    def tasks(self) -> list[dict[str, Any]]:
        return self.engine.documents()

    def calls(self) -> list[dict[str, Any]]:
        return list(self._calls)

    def issued_tokens(self) -> list[str]:
        with self._tokens_lock:
            return list(self._tokens)

    # ---- auth ------------------------------------------------------------------------------
    def issue_token(self, client_id: str) -> str:
        token = secrets.token_urlsafe(32)
        with self._tokens_lock:
            self._tokens[token] = (client_id, time.time() + TOKEN_LIFETIME_S)
        return token

    def user_of(self, authorization: str | None) -> str:
        if not authorization or not authorization.startswith("Bearer "):
            raise ApiError(401, "AuthenticationFailed", "No bearer token was given")
        with self._tokens_lock:
            entry = self._tokens.get(authorization[len("Bearer ") :])
        if entry is None or entry[1] < time.time():
            raise ApiError(401, "AuthenticationFailed", "Token is not active")
        return entry[0]

    def check_client(self, authorization: str | None) -> str | None:
        """The client id if the Basic credentials are right, else None (constant-time compare)."""
        if not authorization or not authorization.startswith("Basic "):
            return None
        try:
            decoded = base64.b64decode(authorization[len("Basic ") :], validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return None
        client_id, _, secret = decoded.partition(":")
        expected = self.clients.get(client_id)
        if expected is None or not hmac.compare_digest(expected.encode(), secret.encode()):
            return None
        return client_id

    def record(self, call: str, method: str, path: str, query: str, status: int) -> None:
        self._calls.append({"call": call, "method": method, "path": path, "query": query, "status": status})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], emulator: EmulatorServer):
        self.emulator = emulator
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()
        super().__init__(address, handler)

    def close_all(self) -> None:
        """Close the listening socket and every kept-alive connection (a restart must not leak them)."""
        self.server_close()
        with self.connections_lock:
            for conn in list(self.connections):
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60

    def setup(self) -> None:
        super().setup()
        with self.server.connections_lock:
            self.server.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.connections_lock:
            self.server.connections.discard(self.connection)
        super().finish()

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("emulator: " + format, *args)

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        emu = self.server.emulator
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        route = _route(method, parts.path)
        if route is None:
            self._send(404, {"code": "ClientError.NotFound", "message": f"No such resource {parts.path}"})
            return
        call, handler, args = route
        status, body, headers = self._serve(emu, call, handler, args, query, raw)
        if call:
            emu.record(call, method, parts.path, parts.query, status)
        self._send(status, body, headers)

    def _serve(
        self,
        emu: EmulatorServer,
        call: str,
        handler: Callable[..., Reply],
        args: tuple[str, ...],
        query: dict[str, str],
        raw: bytes,
    ) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
        try:
            body = json.loads(raw) if raw and call != "token" else {}
        except ValueError:
            return 400, {"code": "ClientError.BadRequest", "message": "Body is not JSON"}, {}
        if not call:  # control plane
            try:
                status, reply = handler(emu, self.command, body)
            except FaultSpecError as exc:
                return 400, {"code": "BadFaultSpec", "message": str(exc)}, {}
            return status, reply, {}
        fault = emu.faults.for_call(call)
        try:
            if fault and not fault.after:
                return _fault_reply(call, fault)
            if call == "token":
                status, reply = _token(emu, self.headers.get("Authorization"), raw)
            else:
                user = emu.user_of(self.headers.get("Authorization"))
                if not emu.rate_limiter.allow(user):
                    message = "Too many requests; slow down"
                    return 429, _error("RequestLimitExceeded", message, self.path), {"Retry-After": "1"}
                status, reply = handler(emu, user, query, body, *args)
        except ApiError as exc:
            return exc.http_status, _error(exc.code, exc.message, self.path), {}
        if fault:
            return _fault_reply(call, fault)
        return status, reply, {}

    def _send(
        self, status: int, body: dict[str, Any] | str, headers: Mapping[str, str] | None = None
    ) -> None:
        data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
        self.send_response(status)
        kind = "text/html; charset=utf-8" if isinstance(body, str) else "application/json"
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)


def _error(code: str, message: str, resource: str) -> dict[str, Any]:
    return {"code": code, "message": message, "request_id": secrets.token_hex(5), "resource": resource}


def _fault_reply(call: str, fault: CallFault) -> tuple[int, dict[str, Any] | str, dict[str, str]]:
    headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
    if fault.body is not None:
        return fault.status, fault.body, headers
    if call == "token":
        default = "invalid_client" if fault.status == 401 else "server_error"
        return fault.status, {"error": fault.code or default, "error_description": fault.message}, headers
    default = {401: "AuthenticationFailed", 409: "Conflict", 429: "RequestLimitExceeded"}.get(
        fault.status, "ExternalError"
    )
    if fault.status >= 500 and not fault.code:
        default = "ServiceUnavailable" if fault.status == 503 else "InternalServerError"
    return fault.status, _error(fault.code or default, fault.message, call), headers


# ---- Auth ------------------------------------------------------------------------------------
def _token(emu: EmulatorServer, authorization: str | None, raw: bytes) -> Reply:
    form = {k: v[-1] for k, v in parse_qs(raw.decode(errors="replace")).items()}
    client_id = emu.check_client(authorization)
    if client_id is None:
        return 401, {"error": "invalid_client", "error_description": "Invalid client credentials"}
    if form.get("grant_type") != "client_credentials":
        return 400, {"error": "unsupported_grant_type", "error_description": "Use client_credentials"}
    scopes = form.get("scope", "").split()
    if TRANSFER_SCOPE not in scopes:
        return 400, {"error": "invalid_scope", "error_description": f"Only {TRANSFER_SCOPE} is served"}
    return 200, {
        "access_token": emu.issue_token(client_id),
        "expires_in": TOKEN_LIFETIME_S,
        "resource_server": "transfer.api.globus.org",
        "token_type": "Bearer",
        "scope": TRANSFER_SCOPE,
        "other_tokens": [],
    }


# ---- Transfer: tasks -------------------------------------------------------------------------
def _submission_id(emu: EmulatorServer, user: str, query: dict[str, str], body: dict[str, Any]) -> Reply:
    return 200, {"DATA_TYPE": "submission_id", "value": emu.engine.new_submission_id(user)}


def _submit(kind: str) -> Callable[..., Reply]:
    def submit(emu: EmulatorServer, user: str, query: dict[str, str], body: dict[str, Any]) -> Reply:
        task, duplicate = emu.engine.submit(user, body, kind)
        resource = "/v0.10/transfer" if kind == "TRANSFER" else "/v0.10/delete"
        return (200 if duplicate else 202), {
            "DATA_TYPE": "transfer_result" if kind == "TRANSFER" else "delete_result",
            "code": "Duplicate" if duplicate else "Accepted",
            "message": (
                "A task with this submission_id was already accepted; no new task was created"
                if duplicate
                else "The task has been accepted and queued for execution"
            ),
            "request_id": secrets.token_hex(5),
            "resource": resource,
            "submission_id": task.submission_id,
            "task_id": task.task_id,
            "task_link": {
                "DATA_TYPE": "link",
                "href": f"/v0.10/task/{task.task_id}?format=json",
                "rel": "related",
                "resource": "task",
                "title": "related task",
            },
        }

    return submit


def _get_task(emu: EmulatorServer, user: str, query: dict[str, str], body: Any, task_id: str) -> Reply:
    with emu.engine.lock:
        return 200, emu.engine.get(user, task_id).document(emu.collections)


def _cancel(emu: EmulatorServer, user: str, query: dict[str, str], body: Any, task_id: str) -> Reply:
    code = emu.engine.cancel(user, task_id)
    message = (
        "The task has been cancelled successfully."
        if code == "Canceled"
        else "The task completed before it could be cancelled."
    )
    return 200, {"DATA_TYPE": "result", "code": code, "message": message, "request_id": secrets.token_hex(5)}


def _limit_offset(query: dict[str, str], default: int, maximum: int) -> tuple[int, int]:
    try:
        limit = int(query.get("limit", default))
        offset = int(query.get("offset", 0))
    except ValueError:
        raise ApiError(400, "ClientError.BadRequest", "limit and offset must be integers") from None
    if not 1 <= limit <= maximum or offset < 0:
        raise ApiError(400, "ClientError.BadRequest", f"limit must be 1..{maximum}, offset >= 0")
    return limit, offset


def _task_matches(task: Task, filters: str) -> bool:
    """Transfer filter syntax ``key:v1,v2/key2:v`` on task_id, type, status, label (``~`` substring)."""
    for clause in filter(None, filters.split("/")):
        key, _, values = clause.partition(":")
        value = {"task_id": task.task_id, "type": task.type, "status": task.status, "label": task.label}
        if key not in value:
            raise ApiError(400, "ClientError.BadRequest", f"Unsupported task_list filter field {key!r}")
        actual = value[key] or ""
        if key == "label" and values.startswith("~"):
            if values[1:].lower() not in actual.lower():
                return False
        elif actual not in values.split(","):
            return False
    return True


def _task_list(emu: EmulatorServer, user: str, query: dict[str, str], body: Any) -> Reply:
    limit, offset = _limit_offset(query, 10, 1000)
    tasks = [t for t in emu.engine.owned(user) if _task_matches(t, query.get("filter", ""))]
    descending = query.get("orderby", "request_time DESC").strip().upper().endswith("DESC")
    tasks.sort(key=lambda t: t.request_time, reverse=descending)
    page = tasks[offset : offset + limit]
    with emu.engine.lock:
        data = [t.document(emu.collections) for t in page]
    return 200, {
        "DATA_TYPE": "task_list",
        "length": len(data),
        "limit": limit,
        "offset": offset,
        "total": len(tasks),
        "DATA": data,
    }


def _event_list(emu: EmulatorServer, user: str, query: dict[str, str], body: Any, task_id: str) -> Reply:
    limit, offset = _limit_offset(query, 10, 1000)
    with emu.engine.lock:
        events = list(reversed(emu.engine.get(user, task_id).events))  # newest first
    if query.get("filter") == "is_error:1":
        events = [e for e in events if e["is_error"]]
    page = events[offset : offset + limit]
    return 200, {
        "DATA_TYPE": "event_list",
        "length": len(page),
        "limit": limit,
        "offset": offset,
        "total": len(events),
        "DATA": page,
    }


def _marker_list(data_type: str, attribute: str) -> Callable[..., Reply]:
    def listing(emu: EmulatorServer, user: str, query: dict[str, str], body: Any, task_id: str) -> Reply:
        try:
            marker = int(query.get("marker") or 0)
        except ValueError:
            raise ApiError(400, "ClientError.BadRequest", "marker must be an integer") from None
        with emu.engine.lock:
            entries = list(getattr(emu.engine.get(user, task_id), attribute))
        page = entries[marker : marker + _MARKER_PAGE]
        following = marker + _MARKER_PAGE
        return 200, {
            "DATA_TYPE": data_type,
            "marker": marker,
            "next_marker": following if following < len(entries) else None,
            "DATA": page,
        }

    return listing


# ---- Transfer: file operations ---------------------------------------------------------------
def _file_doc(path: Path) -> dict[str, Any]:
    lst = path.lstat()
    is_link = stat.S_ISLNK(lst.st_mode)
    try:
        st = path.stat() if is_link else lst
    except OSError:  # dangling link
        st = lst
    kind = "link" if is_link else ("dir" if stat.S_ISDIR(st.st_mode) else "file")
    return {
        "DATA_TYPE": "file",
        "name": path.name,
        "type": kind,
        "link_target": os.readlink(path) if is_link else None,
        "permissions": f"{stat.S_IMODE(st.st_mode):04o}",
        "size": st.st_size,
        "user": _name(pwd.getpwuid, st.st_uid),
        "group": _name(grp.getgrgid, st.st_gid),
        "last_modified": event_time(st.st_mtime),
    }


def _name(lookup: Callable[[int], Any], ident: int) -> str:
    try:
        return lookup(ident)[0]
    except KeyError:
        return str(ident)


def _ls(emu: EmulatorServer, user: str, query: dict[str, str], body: Any, endpoint: str) -> Reply:
    path = query.get("path") or "/~/"
    local = emu.collections.local(endpoint, path)
    limit, offset = _limit_offset(query, 100_000, 100_000)
    if not local.exists():
        raise ApiError(404, "ClientError.NotFound", f"Directory '{path}' not found on endpoint {endpoint}")
    if not local.is_dir():
        raise ApiError(502, "ExternalError.DirListingFailed.NotDirectory", f"Not a directory: '{path}'")
    try:
        names = sorted(os.listdir(local))
    except PermissionError:
        raise ApiError(403, "EndpointPermissionDenied", f"Permission denied listing '{path}'") from None
    if query.get("show_hidden") in ("0", "false", "False"):
        names = [n for n in names if not n.startswith(".")]
    docs = []
    for name in names[offset : offset + limit]:
        try:
            docs.append(_file_doc(local / name))
        except FileNotFoundError:  # removed while listing
            continue
    shown_path = path if path.endswith("/") else path + "/"
    return 200, {
        "DATA_TYPE": "file_list",
        "path": shown_path,
        "endpoint": endpoint,
        "length": len(docs),
        "total": len(names),
        "has_next_page": offset + limit < len(names),
        "limit": limit,
        "offset": offset,
        "DATA": docs,
    }


def _stat(emu: EmulatorServer, user: str, query: dict[str, str], body: Any, endpoint: str) -> Reply:
    path = query.get("path", "")
    local = emu.collections.local(endpoint, path)
    if not local.exists() and not local.is_symlink():
        raise ApiError(404, "NotFound", f"Path not found: '{path}'")
    return 200, _file_doc(local)


def _mkdir(
    emu: EmulatorServer, user: str, query: dict[str, str], body: dict[str, Any], endpoint: str
) -> Reply:
    if body.get("DATA_TYPE") != "mkdir" or not isinstance(body.get("path"), str):
        raise ApiError(400, "ClientError.BadRequest", "Expected {'DATA_TYPE': 'mkdir', 'path': ...}")
    local = emu.collections.local(endpoint, body["path"])
    try:
        local.mkdir()
    except FileExistsError:
        raise ApiError(
            502, "ExternalError.MkdirFailed.Exists", f"Path already exists: {body['path']}"
        ) from None
    except FileNotFoundError:
        raise ApiError(502, "ExternalError.MkdirFailed.NotFound", f"Parent missing: {body['path']}") from None
    except PermissionError:
        raise ApiError(403, "EndpointPermissionDenied", f"Permission denied: {body['path']}") from None
    return 202, {
        "DATA_TYPE": "mkdir_result",
        "code": "DirectoryCreated",
        "message": "The directory was created successfully",
        "request_id": secrets.token_hex(5),
        "resource": f"/operation/endpoint/{endpoint}/mkdir",
    }


def _rename(
    emu: EmulatorServer, user: str, query: dict[str, str], body: dict[str, Any], endpoint: str
) -> Reply:
    if body.get("DATA_TYPE") != "rename" or not all(
        isinstance(body.get(k), str) for k in ("old_path", "new_path")
    ):
        raise ApiError(
            400, "ClientError.BadRequest", "Expected {'DATA_TYPE': 'rename', 'old_path', 'new_path'}"
        )
    old = emu.collections.local(endpoint, body["old_path"])
    new = emu.collections.local(endpoint, body["new_path"])
    if not old.exists():
        raise ApiError(404, "ClientError.NotFound", f"Path not found: {body['old_path']}")
    try:
        os.rename(old, new)
    except OSError as exc:
        raise ApiError(502, "ExternalError.RenameFailed", f"Rename failed: {exc.strerror}") from None
    return 200, {
        "DATA_TYPE": "result",
        "code": "FileRenamed",
        "message": "File or directory renamed successfully",
        "request_id": secrets.token_hex(5),
        "resource": f"/operation/endpoint/{endpoint}/rename",
    }


# ---- control plane ---------------------------------------------------------------------------
def _control_faults(emu: EmulatorServer, method: str, body: Any) -> tuple[int, dict[str, Any]]:
    if method == "POST":
        emu.faults.add(*parse_rules(body))
    elif method == "DELETE":
        emu.faults.clear()
    return 200, {"faults": emu.faults.describe()}


def _control_tasks(emu: EmulatorServer, method: str, body: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"tasks": emu.tasks()}


def _control_calls(emu: EmulatorServer, method: str, body: Any) -> tuple[int, dict[str, Any]]:
    return 200, {"calls": emu.calls()}


_ID = r"([0-9a-fA-F-]{36})"
_ROUTES: list[tuple[str, re.Pattern[str], str, Callable[..., Any]]] = [
    ("POST", re.compile(r"/v2/oauth2/token"), "token", _token),
    ("GET", re.compile(r"/v0\.10/submission_id"), "get_submission_id", _submission_id),
    ("POST", re.compile(r"/v0\.10/transfer"), "submit_transfer", _submit("TRANSFER")),
    ("POST", re.compile(r"/v0\.10/delete"), "submit_delete", _submit("DELETE")),
    ("GET", re.compile(r"/v0\.10/task_list"), "task_list", _task_list),
    ("GET", re.compile(rf"/v0\.10/task/{_ID}"), "get_task", _get_task),
    ("POST", re.compile(rf"/v0\.10/task/{_ID}/cancel"), "cancel_task", _cancel),
    ("GET", re.compile(rf"/v0\.10/task/{_ID}/event_list"), "task_event_list", _event_list),
    (
        "GET",
        re.compile(rf"/v0\.10/task/{_ID}/successful_transfers"),
        "task_successful_transfers",
        _marker_list("successful_transfers", "successful"),
    ),
    (
        "GET",
        re.compile(rf"/v0\.10/task/{_ID}/skipped_errors"),
        "task_skipped_errors",
        _marker_list("skipped_errors", "skipped"),
    ),
    ("GET", re.compile(r"/v0\.10/operation/endpoint/([^/]+)/ls"), "operation_ls", _ls),
    ("GET", re.compile(r"/v0\.10/operation/endpoint/([^/]+)/stat"), "operation_stat", _stat),
    ("POST", re.compile(r"/v0\.10/operation/endpoint/([^/]+)/mkdir"), "operation_mkdir", _mkdir),
    ("POST", re.compile(r"/v0\.10/operation/endpoint/([^/]+)/rename"), "operation_rename", _rename),
    ("GET|POST|DELETE", re.compile(r"/_emulator/faults"), "", _control_faults),
    ("GET", re.compile(r"/_emulator/tasks"), "", _control_tasks),
    ("GET", re.compile(r"/_emulator/calls"), "", _control_calls),
]


def _route(method: str, path: str) -> tuple[str, Callable[..., Any], tuple[str, ...]] | None:
    for methods, pattern, call, handler in _ROUTES:
        match = pattern.fullmatch(path.rstrip("/") or "/")
        if match and method in methods.split("|"):
            return call, handler, match.groups()
    return None


# ---- CLI -------------------------------------------------------------------------------------
def _pair(text: str, sep: str, what: str) -> tuple[str, str]:
    left, found, right = text.partition(sep)
    if not found or not left or not right:
        raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
    return left, right


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument(
        "--collection",
        action="append",
        default=[],
        type=lambda s: _pair(s, "=", "UUID=LOCALDIR"),
        help="UUID=LOCALDIR: collection path P is LOCALDIR/P (repeatable)",
    )
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        type=lambda s: _pair(s, ":", "ID:SECRET"),
        help="ID:SECRET of a confidential client allowed to get tokens (repeatable)",
    )
    parser.add_argument("--bandwidth-mbps", type=float, default=None, help="shared link, megabits/s")
    parser.add_argument("--task-latency-s", type=float, default=0.0, help="delay before a task moves bytes")
    parser.add_argument("--retry-interval-s", type=float, default=0.5, help="pause between fault retries")
    parser.add_argument("--max-active-tasks", type=int, default=3)
    parser.add_argument("--max-pending-tasks", type=int, default=100)
    parser.add_argument("--file-concurrency", type=int, default=4, help="files moved at once per task")
    parser.add_argument("--rate-limit", type=int, default=200, help="requests per user per 10 s (0: off)")
    parser.add_argument("--state-file", default=None, help="persist tasks here; a restart resumes them")
    parser.add_argument("--faults", default=None, help="JSON file of fault rules")
    args = parser.parse_args(argv)
    if not args.collection or not args.client:
        parser.error("give at least one --collection and one --client")
    try:
        faults = parse_rules(json.loads(Path(args.faults).read_text())) if args.faults else []
        server = EmulatorServer(
            dict(args.collection),
            dict(args.client),
            host=args.host,
            port=args.port,
            bandwidth_mbps=args.bandwidth_mbps,
            task_latency_s=args.task_latency_s,
            retry_interval_s=args.retry_interval_s,
            max_active_tasks=args.max_active_tasks,
            max_pending_tasks=args.max_pending_tasks,
            file_concurrency=args.file_concurrency,
            rate_limit_per_10s=args.rate_limit or None,
            state_file=args.state_file,
            faults=faults,
        ).start()
    except (OSError, ValueError) as exc:
        print(f"globus emulator: {exc}", file=sys.stderr)
        return 2
    stopping = stop_on_signals()  # Ctrl-C, SIGTERM and SIGHUP: stop cleanly (state saved, jobs killed)
    print(f"listening on {server.url.rstrip('/')}", flush=True)
    stopping.wait()
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
