"""Fault injection for the Globus Transfer emulator: per API call and per file path.

A *call fault* answers an HTTP call with an error status (5xx, 429 with ``Retry-After``, 409 with
any ``code``, 401...), optionally after the call was processed (the client sees an error although
the task exists: the case that makes duplicate submissions), or with a non-JSON ``body`` (what a
proxy in front of Globus answers). A *path fault* makes the copy (or the delete: ``task``) of
matching files fail with a Globus fault code (FILE_NOT_FOUND, PERMISSION_DENIED, VERIFY_CHECKSUM,
QUOTA_EXCEEDED...), a number of times or forever; CREDENTIAL_EXPIRED suspends the whole task
(INACTIVE). Rules come from Python, from ``--faults FILE.json`` or from ``POST /_emulator/faults``.
"""

from __future__ import annotations

import fnmatch
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: Names of the calls, as the globus-sdk methods that make them.
CALLS = (
    "token",
    "get_submission_id",
    "submit_transfer",
    "submit_delete",
    "get_task",
    "cancel_task",
    "task_list",
    "task_event_list",
    "task_successful_transfers",
    "task_skipped_errors",
    "operation_ls",
    "operation_stat",
    "operation_mkdir",
    "operation_rename",
)

#: Path fault codes the emulator knows how to play.
PATH_ERRORS = (
    "FILE_NOT_FOUND",
    "PERMISSION_DENIED",
    "VERIFY_CHECKSUM",
    "QUOTA_EXCEEDED",
    "ENDPOINT_ERROR",
    "CONNECT_FAILED",
    "CREDENTIAL_EXPIRED",
)


class FaultSpecError(ValueError):
    """A fault rule that cannot be understood."""


@dataclass
class CallFault:
    call: str  # a name from CALLS or "*"
    status: int
    code: str | None = None
    message: str = "injected fault"
    times: int | None = 1  # None: forever
    after: bool = False  # process the call, then answer with the error
    retry_after: int | None = None
    body: str | None = None  # sent as text/html instead of a JSON error document

    def describe(self) -> dict[str, Any]:
        return {"call": self.call, "status": self.status, "code": self.code, "times": self.times}


@dataclass
class PathFault:
    path: str  # fnmatch pattern on the collection path
    error: str
    side: str = "source"  # or "destination"
    times: int | None = None
    fatal: bool = False  # fail the whole task at once instead of retrying
    task: str | None = None  # only in "transfer" or only in "delete" tasks; None: both

    def describe(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "error": self.error,
            "side": self.side,
            "times": self.times,
            "task": self.task,
        }


def parse_rule(raw: Mapping[str, Any]) -> CallFault | PathFault:
    """One rule from its JSON form; unknown keys and values are refused, not ignored."""
    if not isinstance(raw, Mapping):
        raise FaultSpecError(f"a fault rule must be an object, got {type(raw).__name__}")
    data = dict(raw)
    try:
        if "call" in data:
            allowed = {"call", "status", "code", "message", "times", "after", "retry_after", "body"}
            _refuse_unknown(data, allowed)
            if data["call"] != "*" and data["call"] not in CALLS:
                raise FaultSpecError(f"unknown call {data['call']!r}; known: {', '.join(CALLS)} or '*'")
            status = int(data["status"])
            if not 400 <= status <= 599:
                raise FaultSpecError(f"fault status must be 4xx or 5xx, got {status}")
            return CallFault(**{**data, "status": status})
        if "path" in data:
            _refuse_unknown(data, {"path", "error", "side", "times", "fatal", "task"})
            if data.get("task") not in (None, "transfer", "delete"):
                raise FaultSpecError("path fault task must be 'transfer' or 'delete' (or absent: both)")
            if data.get("error") not in PATH_ERRORS:
                raise FaultSpecError(
                    f"unknown path error {data.get('error')!r}; known: {', '.join(PATH_ERRORS)}"
                )
            if data.get("side", "source") not in ("source", "destination"):
                raise FaultSpecError("path fault side must be 'source' or 'destination'")
            return PathFault(**data)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, FaultSpecError):
            raise
        raise FaultSpecError(f"bad fault rule {raw!r}: {exc}") from None
    raise FaultSpecError(f"a fault rule needs a 'call' or a 'path' key: {raw!r}")


def _refuse_unknown(data: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = set(data) - allowed
    if unknown:
        raise FaultSpecError(f"unknown fault rule keys {sorted(unknown)}; allowed: {sorted(allowed)}")


def parse_rules(raw: Any) -> list[CallFault | PathFault]:
    """Rules from a JSON list, or from an object with a ``faults`` list."""
    if isinstance(raw, Mapping):
        raw = raw.get("faults")
    if not isinstance(raw, list):
        raise FaultSpecError("faults must be a JSON list of rules or {'faults': [...]}")
    return [parse_rule(r) for r in raw]


class FaultPlan:
    """The active rules; each firing uses one of its ``times`` (thread-safe)."""

    def __init__(self, rules: Iterable[CallFault | PathFault] = ()):
        self._lock = threading.Lock()
        self._rules: list[CallFault | PathFault] = list(rules)

    def add(self, *rules: CallFault | PathFault | Mapping[str, Any]) -> None:
        parsed = [r if isinstance(r, (CallFault, PathFault)) else parse_rule(r) for r in rules]
        with self._lock:
            self._rules.extend(parsed)

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def describe(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r.describe() for r in self._rules]

    def for_call(self, call: str) -> CallFault | None:
        with self._lock:
            for rule in self._rules:
                if isinstance(rule, CallFault) and rule.call in (call, "*"):
                    self._use(rule)
                    return rule
        return None

    def for_path(self, path: str, side: str, task: str) -> PathFault | None:
        """The first rule for ``path`` on ``side`` in a task of kind ``task`` ("transfer"/"delete")."""
        with self._lock:
            for rule in self._rules:
                if (
                    isinstance(rule, PathFault)
                    and rule.side == side
                    and rule.task in (None, task)
                    and fnmatch.fnmatchcase(path, rule.path)
                ):
                    self._use(rule)
                    return rule
        return None

    def _use(self, rule: CallFault | PathFault) -> None:
        if rule.times is None:
            return
        rule.times -= 1
        if rule.times <= 0:
            self._rules.remove(rule)
