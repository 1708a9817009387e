"""Scans that cannot be processed, and why: one record per scan, keyed by its partition key.

The file itself is never moved or deleted. Whoever rejects a scan (the arrival sensor for a file it
refuses to register, a stage for a file that fails validation or copying) writes the same record
here, and a later successful registration clears it, so the list shows what is wrong *now*.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.scans import scan_key

KIND = "quarantine"


@dataclass(frozen=True)
class QuarantineRecord:
    relpath: str
    stage: str  # who rejected it: "sensor" or an asset name
    reason: str
    at: float = field(default_factory=time.time)


class Quarantine:
    """The quarantine list of one instance, stored in its ledger."""

    def __init__(self, ledger: Ledger):
        self.ledger = ledger

    def add(self, relpath: str, stage: str, reason: str) -> QuarantineRecord:
        record = QuarantineRecord(relpath, stage, reason)
        self.ledger.put(KIND, scan_key(relpath), asdict(record))
        return record

    def get(self, key: str) -> QuarantineRecord | None:
        data = self.ledger.get(KIND, key)
        return QuarantineRecord(**data) if data else None

    def clear(self, key: str) -> None:
        self.ledger.delete(KIND, key)

    def all(self) -> dict[str, QuarantineRecord]:
        return {key: QuarantineRecord(**data) for key, data in self.ledger.all(KIND).items()}
