"""Copies on one machine (the default ``local`` profile): the "NERSC" side is a local folder.

Same guarantees as the Globus adapter: a file appears at the destination only complete and
verified (written under a temporary name, checksummed, then renamed), and a copy already
verified is not made again.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

from cosmic_dagster.domain.checksums import sha256_file
from cosmic_dagster.domain.scans import ScanPathError, resolve_under_root
from cosmic_dagster.transfer.protocol import BatchReport, CopyOutcome, TransferError, TransferItem


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
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        try:
            with open(source, "rb") as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 4 * 1024 * 1024)
                dst.flush()
                os.fsync(dst.fileno())
            checksum = sha256_file(tmp)
            if checksum != item.sha256:
                tmp.unlink()
                return outcome(
                    verified=False,
                    checksum=checksum,
                    checksum_algorithm="sha256",
                    error=f"checksum mismatch after copy of {item.relpath}: changed since registration?",
                )
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            return outcome(verified=False, error=f"copy of {item.relpath} failed: {exc.strerror or exc}")
        return outcome(bytes=item.size, verified=True, checksum=checksum, checksum_algorithm="sha256")
