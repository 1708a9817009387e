"""The contract every copy adapter (local, Globus) fulfils.

A batch is copied as one unit (one Globus task carries many scans) but reported per scan, so a
bad file never hides the good ones next to it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cosmic_dagster.errors import CosmicError


@dataclass(frozen=True)
class TransferItem:
    """One scan to copy; the relative path is kept on both sides (COSMIC convention)."""

    key: str
    relpath: str
    size: int
    sha256: str


@dataclass(frozen=True)
class CopyOutcome:
    """What happened to one item of a batch; ``error is None`` means the copy is verified."""

    key: str
    destination: str
    bytes: int
    seconds: float
    verified: bool
    already_present: bool = False
    checksum: str | None = None
    checksum_algorithm: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.verified


@dataclass(frozen=True)
class BatchReport:
    """Per-scan outcomes of one batch plus the external task that carried it (if any)."""

    outcomes: dict[str, CopyOutcome]
    seconds: float
    task_id: str | None = None
    task_url: str | None = None


@dataclass(frozen=True)
class SourceFile:
    """The beamline file of a scan as it is now (what pruning compares with the registration)."""

    key: str
    exists: bool
    size: int = 0
    mtime: float = 0.0
    problem: str | None = None  # not a plain file under the root (symlink, outside, directory)


@dataclass(frozen=True)
class Check:
    """One verification or deletion result, with the evidence in words (for the audit trail)."""

    ok: bool
    detail: str


class TransferError(CosmicError, RuntimeError):
    """A whole batch could not be copied (bad config, auth, service down after retries)."""


class Transfer(Protocol):
    """Copy scans to the compute site: idempotent, atomic per file, reattaching to running tasks."""

    def copy_batch(self, items: Sequence[TransferItem], label: str) -> BatchReport:
        """Copy ``items``; never raises for a single bad item (see ``CopyOutcome.error``)."""
        ...

    def destination_path(self, relpath: str) -> str:
        """Where ``relpath`` lives (or will live) at the destination, as the compute side sees it."""
        ...

    def inspect_sources(self, items: Sequence[TransferItem]) -> dict[str, SourceFile]:
        """The beamline files of ``items`` as they are now, without following symlinks."""
        ...

    def verify_copies(self, items: Sequence[TransferItem]) -> dict[str, Check]:
        """Re-verify each destination copy against the item's registered checksum, now (never by name)."""
        ...

    def delete_sources(self, items: Sequence[TransferItem]) -> dict[str, Check]:
        """Delete the beamline files of ``items``; ``ok`` only when the file is verifiably gone."""
        ...

    def forget(self, keys: Sequence[str]) -> None:
        """Drop what the adapter recorded about scans whose beamline file was pruned."""

    def check_reachable(self) -> str:
        """Each collection this adapter uses answers now; a short summary, or TransferError."""
        ...
