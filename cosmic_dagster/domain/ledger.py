"""A small durable record of external ids (Globus task ids, Slurm job ids).

Written the moment an id exists, read before any submission, so a step retried after its worker
was killed finds the task or job it already started instead of starting a duplicate.
SQLite gives atomic writes across the run workers of one instance. Beside the records, an
append-only ``audit`` table keeps decisions that must stay explainable later (what pruning deleted
and why), which the compaction of records never touches.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    updated REAL NOT NULL,
    PRIMARY KEY (kind, name)
)
"""
_AUDIT_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    name TEXT NOT NULL,
    data TEXT NOT NULL,
    at REAL NOT NULL
)
"""


class Ledger:
    """Key/value records grouped by kind (``"globus_task"``, ``"job"``...)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)
            db.execute(_AUDIT_SCHEMA)
            db.execute("CREATE INDEX IF NOT EXISTS audit_name ON audit (kind, name)")

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        return db

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        with self._connect() as db:
            row = db.execute("SELECT data FROM records WHERE kind=? AND name=?", (kind, name)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, kind: str, name: str, data: dict[str, Any]) -> None:
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO records (kind, name, data, updated) VALUES (?, ?, ?, ?)",
                (kind, name, json.dumps(data, sort_keys=True), time.time()),
            )

    def delete(self, kind: str, name: str) -> None:
        with self._connect() as db:
            db.execute("DELETE FROM records WHERE kind=? AND name=?", (kind, name))

    def all(self, kind: str) -> dict[str, dict[str, Any]]:
        with self._connect() as db:
            rows = db.execute("SELECT name, data FROM records WHERE kind=?", (kind,)).fetchall()
        return {name: json.loads(data) for name, data in rows}

    def delete_many(self, kind: str, names: Iterable[str]) -> None:
        with self._connect() as db:
            db.executemany("DELETE FROM records WHERE kind=? AND name=?", [(kind, n) for n in names])

    def rewrite(
        self, put: Mapping[str, Mapping[str, dict[str, Any]]], delete: Mapping[str, Iterable[str]]
    ) -> None:
        """Put and delete records of several kinds in one transaction: all of it or nothing."""
        now = time.time()
        db = self._connect()
        try:
            db.execute("BEGIN IMMEDIATE")
            for kind, entries in put.items():
                db.executemany(
                    "INSERT OR REPLACE INTO records (kind, name, data, updated) VALUES (?, ?, ?, ?)",
                    [(kind, n, json.dumps(d, sort_keys=True), now) for n, d in entries.items()],
                )
            for kind, names in delete.items():
                db.executemany("DELETE FROM records WHERE kind=? AND name=?", [(kind, n) for n in names])
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        finally:
            db.close()

    def names_with_prefix(self, kind: str, prefix: str) -> list[str]:
        escaped = prefix.replace("!", "!!").replace("%", "!%").replace("_", "!_")
        with self._connect() as db:
            rows = db.execute(
                "SELECT name FROM records WHERE kind=? AND name LIKE ? ESCAPE '!'", (kind, escaped + "%")
            ).fetchall()
        return [row[0] for row in rows]

    def append(self, kind: str, entries: Mapping[str, dict[str, Any]]) -> None:
        """Add audit entries (name -> data) in one transaction; they are never rewritten."""
        now = time.time()
        rows = [(kind, name, json.dumps(data, sort_keys=True), now) for name, data in entries.items()]
        with self._connect() as db:
            db.executemany("INSERT INTO audit (kind, name, data, at) VALUES (?, ?, ?, ?)", rows)

    def history(self, kind: str, name: str | None = None) -> list[tuple[str, dict[str, Any], float]]:
        """Audit entries of ``kind`` (of one ``name`` if given), oldest first: (name, data, time)."""
        query, args = "SELECT name, data, at FROM audit WHERE kind=?", [kind]
        if name is not None:
            query, args = query + " AND name=?", [kind, name]
        with self._connect() as db:
            rows = db.execute(query + " ORDER BY id", args).fetchall()
        return [(n, json.loads(d), at) for n, d, at in rows]
