"""Copies on one machine (the default ``local`` profile): the "NERSC" side is a local folder.

Same guarantees as the Globus adapter: a file appears at the destination only complete and
verified (written under a temporary name, checksummed, then renamed), and a copy already
verified is not made again.
"""

from __future__ import annotations

import os
import shutil
import stat
import time
from collections.abc import Sequence
from pathlib import Path

from cosmic_dagster.domain.checksums import sha256_file
from cosmic_dagster.domain.scans import ScanPathError, normalize_relpath, resolve_under_root
from cosmic_dagster.files import atomic_path
from cosmic_dagster.transfer.protocol import (
    BatchReport,
    Check,
    CopyOutcome,
    SourceFile,
    TransferError,
    TransferItem,
)


class _ChangedSinceRegistration(Exception):
    """The copy's checksum is not the registered one: the copy is discarded, not published."""

    def __init__(self, checksum: str):
        super().__init__(checksum)
        self.checksum = checksum


class LocalTransfer:
    """Copy ``source_root/relpath`` to ``destination_root/relpath`` with sha256 verification."""

    def __init__(self, source_root: str | Path, destination_root: str | Path):
        self.source_root = Path(source_root)
        self.destination_root = Path(destination_root)

    def destination_path(self, relpath: str) -> str:
        return str(self.destination_root / relpath)

    def check_reachable(self) -> str:
        if not self.source_root.is_dir():
            raise TransferError(f"beamline folder {self.source_root} is not a directory")
        existing = next(p for p in (self.destination_root, *self.destination_root.parents) if p.exists())
        if not os.access(existing, os.W_OK | os.X_OK):
            raise TransferError(f"destination {self.destination_root} is not writable ({existing})")
        return f"{self.source_root} readable, {self.destination_root} writable"

    def copy_batch(self, items: Sequence[TransferItem], label: str) -> BatchReport:
        started = time.monotonic()
        outcomes = {item.key: self._copy_one(item) for item in items}
        return BatchReport(outcomes=outcomes, seconds=time.monotonic() - started)

    def _copy_one(self, item: TransferItem) -> CopyOutcome:
        started = time.monotonic()
        dest = Path(self.destination_path(item.relpath))

        def outcome(**kw: object) -> CopyOutcome:
            base = dict(key=item.key, destination=str(dest), bytes=0, seconds=time.monotonic() - started)
            return CopyOutcome(**{**base, **kw})  # type: ignore[arg-type]

        if dest.is_file() and dest.stat().st_size == item.size and sha256_file(dest) == item.sha256:
            return outcome(
                verified=True, already_present=True, checksum=item.sha256, checksum_algorithm="sha256"
            )
        try:
            source = resolve_under_root(self.source_root, item.relpath)
        except ScanPathError as exc:
            return outcome(verified=False, error=str(exc))
        if not source.is_file():
            return outcome(verified=False, error=f"source file vanished before its copy: {item.relpath}")
        try:
            with atomic_path(dest, unique=True) as tmp:
                with open(source, "rb") as src, open(tmp, "wb") as dst:
                    shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
                checksum = sha256_file(tmp)
                if checksum != item.sha256:
                    raise _ChangedSinceRegistration(checksum)
        except _ChangedSinceRegistration as exc:
            return outcome(
                verified=False,
                checksum=exc.checksum,
                checksum_algorithm="sha256",
                error=f"checksum mismatch after copy of {item.relpath}: changed since registration?",
            )
        except OSError as exc:
            return outcome(verified=False, error=f"copy of {item.relpath} failed: {exc.strerror or exc}")
        return outcome(bytes=item.size, verified=True, checksum=checksum, checksum_algorithm="sha256")

    # ---- pruning -----------------------------------------------------------------------------
    def inspect_sources(self, items: Sequence[TransferItem]) -> dict[str, SourceFile]:
        return {item.key: self._inspect(item) for item in items}

    def _inspect(self, item: TransferItem) -> SourceFile:
        try:
            relpath = normalize_relpath(item.relpath)
            real = resolve_under_root(self.source_root, relpath)
        except ScanPathError as exc:
            return SourceFile(item.key, exists=True, problem=str(exc))
        path = self.source_root / relpath
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return SourceFile(item.key, exists=False)
        # The file itself or a folder above it may be a link that stays inside the root: still
        # not the plain file that was registered, so it is never deleted.
        if real != Path(os.path.realpath(self.source_root)) / relpath:
            return SourceFile(item.key, exists=True, problem=f"reached through a symlink ({real})")
        if not stat.S_ISREG(st.st_mode):
            return SourceFile(item.key, exists=True, problem="not a regular file")
        return SourceFile(item.key, exists=True, size=st.st_size, mtime=st.st_mtime)

    def verify_copies(self, items: Sequence[TransferItem]) -> dict[str, Check]:
        return {item.key: self._verify(item) for item in items}

    def _verify(self, item: TransferItem) -> Check:
        dest = Path(self.destination_path(item.relpath))
        if not dest.is_file():
            return Check(False, f"copy missing at the destination: {dest}")
        size = dest.stat().st_size
        if size != item.size:
            return Check(False, f"copy at the destination has {size} bytes, registered {item.size}")
        digest = sha256_file(dest)
        if digest != item.sha256:
            return Check(False, f"copy re-hashed: sha256 {digest[:12]}... differs from the registered one")
        return Check(True, f"copy re-hashed: sha256 equals the registered {digest[:12]}...")

    def delete_sources(self, items: Sequence[TransferItem]) -> dict[str, Check]:
        return {item.key: self._delete(item) for item in items}

    def _delete(self, item: TransferItem) -> Check:
        now = self._inspect(item)  # again, right before unlinking: nothing may have changed
        if now.problem or not now.exists or now.size != item.size:
            return Check(False, f"not deleted: changed since it was checked ({now.problem or now})")
        try:
            os.unlink(self.source_root / item.relpath)
        except OSError as exc:
            return Check(False, f"delete failed: {exc.strerror or exc}")
        return Check(True, f"deleted {item.relpath}")

    def forget(self, keys: Sequence[str]) -> None:
        """Nothing to drop: local copies keep no records."""
