"""Deleting beamline copies of scans safely: every condition checked, every decision recorded.

The older system deleted a file after N days when a file of the same *name* existed at NERSC. Here
a scan's beamline file is deleted only when all of these hold, each recorded with its evidence:

1. the scan is not quarantined;
2. its ``nersc_copy`` was materialized and the copy check of that copy passed;
3. its reconstruction was materialized (unless the policy says otherwise);
4. it is older than the retention (file time at registration);
5. the beamline file is the registered one: a plain file under the root (no symlink), same size
   and modification time as at registration;
6. the copy is re-verified now against the registered checksum (by the transfer adapter: a
   re-hash locally, a checksum-sync task that moves nothing on Globus).

A dry run (the default) stops before deleting and says what would go. Decisions are appended to the
ledger's audit table; the records of a deleted scan are compacted into one ``pruned`` record.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field

from cosmic_dagster import names
from cosmic_dagster.compute.base import LEDGER_KIND as JOB_KIND
from cosmic_dagster.domain.ledger import Ledger
from cosmic_dagster.domain.quarantine import Quarantine, QuarantineRecord
from cosmic_dagster.pipeline.stages import COPY, JOB_PREFIX, REGISTRATION, Registration
from cosmic_dagster.transfer.protocol import SourceFile, Transfer, TransferItem

AUDIT_KIND = "prune"
PRUNED = "pruned"
DAY_S = 86_400.0
#: ``recon.<scan key>.<digest8>[.<forced timestamp>]`` (see compute.jobscript.job_name).
_JOB_NAME = re.compile(rf"^{JOB_PREFIX}\.(?P<key>.+)\.[0-9a-f]{{8}}(\.\d+)?$")

#: Decision actions.
WOULD_DELETE = "would delete"
DELETED = "deleted"
KEPT = "kept"
DELETE_FAILED = "delete failed"

#: The conditions, in the order they are checked.
CONDITIONS = ("quarantine", "copy", "copy_check", "reconstruction", "retention", "source", "copy_verified")


@dataclass(frozen=True)
class PrunePolicy:
    retention_days: float
    require_reconstruction: bool = True


@dataclass(frozen=True)
class ScanFacts:
    """What the orchestrator knows of a scan (Dagster's materializations and check results)."""

    copied: bool
    copy_check: bool | None  # None: never evaluated for the latest copy
    reconstructed: bool


@dataclass
class Decision:
    key: str
    relpath: str
    bytes: int
    action: str = KEPT
    reason: str = ""
    conditions: dict[str, str] = field(default_factory=dict)  # condition -> "ok: ..." / "failed: ..."

    def passed(self) -> bool:
        """No condition checked so far failed (unchecked ones are filled in at the end)."""
        return all(v.startswith("ok") for v in self.conditions.values())

    def fail(self, condition: str, why: str) -> None:
        self.conditions[condition] = f"failed: {why}"
        if not self.reason:
            self.reason = f"{condition}: {why}"

    def ok(self, condition: str, why: str) -> None:
        self.conditions[condition] = f"ok: {why}"


@dataclass
class PruneReport:
    dry_run: bool
    decisions: list[Decision]

    def totals(self) -> dict[str, int]:
        counts = Counter(d.action for d in self.decisions)
        gone = (WOULD_DELETE, DELETED)
        return {
            "scans": len(self.decisions),
            **{action: counts.get(action, 0) for action in (WOULD_DELETE, DELETED, KEPT, DELETE_FAILED)},
            "bytes": sum(d.bytes for d in self.decisions if d.action in gone),
        }

    def table(self) -> str:
        """What was (or would be) deleted and why the rest was kept, then the totals."""
        lines = [f"{'dry run: ' if self.dry_run else ''}prune decisions"]
        for d in sorted(self.decisions, key=lambda d: (d.action, d.key)):
            lines.append(f"  {d.action:<13} {d.key:<32} {d.reason}")
        lines.append("totals: " + ", ".join(f"{k}={v}" for k, v in self.totals().items()))
        return "\n".join(lines)


class Pruner:
    """Decides for every registered (not yet pruned) scan, then deletes the safe ones if asked."""

    def __init__(self, ledger: Ledger, transfer: Transfer, policy: PrunePolicy):
        self.ledger = ledger
        self.transfer = transfer
        self.policy = policy

    def registered(self) -> dict[str, Registration]:
        return {key: Registration(**data) for key, data in self.ledger.all(REGISTRATION).items()}

    def run(
        self, facts: Mapping[str, ScanFacts], *, now: float, delete: bool = False, label: str = ""
    ) -> PruneReport:
        regs = self.registered()
        quarantined = Quarantine(self.ledger).all()
        decisions = {
            key: self._decide(reg, quarantined.get(key), facts.get(key), now) for key, reg in regs.items()
        }
        items = {key: _item(regs[key]) for key, d in decisions.items() if d.passed()}
        sources = self.transfer.inspect_sources(list(items.values())) if items else {}
        for key, source in sources.items():
            _check_source(decisions[key], regs[key], source)
        to_verify = [items[k] for k in items if decisions[k].passed()]
        for key, check in (self.transfer.verify_copies(to_verify) if to_verify else {}).items():
            (decisions[key].ok if check.ok else decisions[key].fail)("copy_verified", check.detail)
        safe = [items[k] for k in items if decisions[k].passed()]
        for item in safe:
            decisions[item.key].action = WOULD_DELETE
            decisions[item.key].reason = "every condition holds"
        if delete and safe:
            self._delete(safe, decisions, regs)
        for d in decisions.values():
            for condition in CONDITIONS:
                d.conditions.setdefault(condition, "not checked: an earlier condition failed")
        report = PruneReport(dry_run=not delete, decisions=list(decisions.values()))
        self.ledger.append(
            AUDIT_KIND,
            {d.key: {**asdict(d), "dry_run": not delete, "label": label} for d in report.decisions},
        )
        return report

    def _decide(
        self, reg: Registration, record: QuarantineRecord | None, facts: ScanFacts | None, now: float
    ) -> Decision:
        d = Decision(reg.key, reg.relpath, reg.bytes)
        if record is None:
            d.ok("quarantine", "not quarantined")
        else:
            d.fail("quarantine", f"quarantined by {record.stage}: {record.reason}")
        facts = facts or ScanFacts(copied=False, copy_check=None, reconstructed=False)
        if facts.copied:
            d.ok("copy", f"{names.NERSC_COPY} materialized")
        else:
            d.fail("copy", f"{names.NERSC_COPY} never materialized")
        if facts.copy_check is True:
            d.ok("copy_check", f"{names.COPY_CHECK} passed")
        elif facts.copy_check is False:
            d.fail("copy_check", f"{names.COPY_CHECK} failed")
        else:
            d.fail("copy_check", f"{names.COPY_CHECK} never run on the latest copy")
        if not self.policy.require_reconstruction:
            d.ok("reconstruction", "not required by the policy")
        elif facts.reconstructed:
            d.ok("reconstruction", f"{names.RECONSTRUCTION} materialized")
        else:
            d.fail("reconstruction", f"{names.RECONSTRUCTION} not materialized (required by the policy)")
        age_days = (now - reg.mtime) / DAY_S
        verdict = f"{age_days:.1f} days old, retention {self.policy.retention_days:g} days"
        (d.ok if age_days >= self.policy.retention_days else d.fail)("retention", verdict)
        return d

    def _delete(
        self, items: Sequence[TransferItem], decisions: dict[str, Decision], regs: Mapping[str, Registration]
    ) -> None:
        for key, check in self.transfer.delete_sources(items).items():
            d = decisions[key]
            d.conditions["delete"] = ("ok: " if check.ok else "failed: ") + check.detail
            d.action, d.reason = (DELETED, check.detail) if check.ok else (DELETE_FAILED, check.detail)
        deleted = [key for key, d in decisions.items() if d.action == DELETED]
        if deleted:
            self.compact({key: regs[key] for key in deleted}, decisions)

    def compact(self, regs: Mapping[str, Registration], decisions: Mapping[str, Decision]) -> None:
        """Replace the records of deleted scans by one ``pruned`` record each, in one transaction
        (the ledger shrinks as the beamline disk does); the audit table keeps the decisions."""
        copies, recons = self.ledger.all(COPY), self.ledger.all(names.RECONSTRUCTION)
        pruned = {
            key: {
                "relpath": reg.relpath,
                "bytes": reg.bytes,
                "sha256": reg.sha256,
                "destination": copies.get(key, {}).get("destination"),
                "reconstruction": recons.get(key, {}).get("workdir"),
                "job_id": recons.get(key, {}).get("job_id"),
                "how": decisions[key].reason,
            }
            for key, reg in regs.items()
        }
        jobs = [
            name
            for name in self.ledger.names_with_prefix(JOB_KIND, f"{JOB_PREFIX}.")
            if (m := _JOB_NAME.match(name)) and m["key"] in regs
        ]
        gone = list(regs)
        self.ledger.rewrite(
            {PRUNED: pruned},
            {REGISTRATION: gone, COPY: gone, names.RECONSTRUCTION: gone, JOB_KIND: jobs},
        )
        self.transfer.forget(gone)


def _item(reg: Registration) -> TransferItem:
    return TransferItem(key=reg.key, relpath=reg.relpath, size=reg.bytes, sha256=reg.sha256)


def _check_source(d: Decision, reg: Registration, source: SourceFile) -> None:
    if source.problem is not None:
        d.fail("source", source.problem)
    elif not source.exists:
        d.fail("source", "no longer on the beamline disk")
    elif source.size != reg.bytes or not _same_time(source.mtime, reg.mtime):
        d.fail(
            "source",
            f"changed since registration (size {reg.bytes} -> {source.size}, "
            f"mtime {reg.mtime:.0f} -> {source.mtime:.0f})",
        )
    else:
        d.ok("source", "plain file under the root, size and mtime as registered")


def _same_time(a: float, b: float) -> bool:
    """Equal modification times; to the second when one side has only seconds (Globus listings)."""
    if a % 1 and b % 1:
        return a == b
    return math.floor(a) == math.floor(b)
