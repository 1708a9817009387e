"""A small durable record of external ids (Globus task ids, Slurm job ids).

Written the moment an id exists, read before any submission, so a step retried after its worker
was killed finds the task or job it already started instead of starting a duplicate.
SQLite gives atomic writes across the run workers of one instance.
"""

from __future__ import annotations

import json
import sqlite3
import time
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


class Ledger:
    """Key/value records grouped by kind (``"globus_task"``, ``"job"``...)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connect() as db:
            db.execute(_SCHEMA)

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
