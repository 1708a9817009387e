"""Reconciliation: every scan file in a date range is registered and processed, none forgotten.

The sensor and the watcher look only at the newest day folders, so a daemon down for a long
weekend, a scan written into an old folder, or a partition whose run never happened would leave a
scan behind silently. Reconciliation lists the ``YYYY/MM/YYMMDD`` folders of a date range (any
:class:`~cosmic_dagster.domain.arrivals.Lister`: local disk or the Globus collection), compares
them with what the orchestrator knows, and says per scan what to do.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections import Counter
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

from cosmic_dagster.domain.arrivals import Arrival, Lister, Rejection
from cosmic_dagster.domain.scans import is_scan_name, scan_key

#: States of a listed scan; the first two are launched by reconciliation.
MISSING = "missing"  # no partition: never registered
NEVER_RUN = "never_run"  # a partition without any planned run
IN_FLIGHT = "in_flight"  # a run is planned, nothing materialized yet
INCOMPLETE = "incomplete"  # registered but not reconstructed (a failed run: see its alert)
DONE = "done"  # reconstruction materialized
QUARANTINED = "quarantined"
REJECTED = "rejected"  # refused before registration (e.g. a symlink leaving the root)
SETTLING = "settling"  # still being written
STATES = (MISSING, NEVER_RUN, IN_FLIGHT, INCOMPLETE, DONE, QUARANTINED, REJECTED, SETTLING)
TO_LAUNCH = (MISSING, NEVER_RUN)

_DAY = re.compile(r"^\d{6}$")


@dataclass(frozen=True)
class Known:
    """What the orchestrator knows: partitions, materializations, planned runs, quarantine."""

    partitions: Collection[str]
    registered: Collection[str]  # raw_scan materialized
    reconstructed: Collection[str]
    quarantined: Collection[str]
    planned: Callable[[str], bool]  # a run was planned for this partition (asked only when needed)


@dataclass
class ReconcileReport:
    start: dt.date
    end: dt.date
    folders: int = 0
    listed: int = 0
    seconds: float = 0.0
    states: dict[str, str] = field(default_factory=dict)  # scan key -> state
    arrivals: dict[str, Arrival] = field(default_factory=dict)  # scan key -> file
    rejections: list[Rejection] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counted = Counter(self.states.values())
        return {state: counted.get(state, 0) for state in STATES}

    def to_launch(self) -> list[str]:
        """Keys to register and run, oldest file first (so batches follow acquisition order)."""
        keys = [k for k, s in self.states.items() if s in TO_LAUNCH]
        return sorted(keys, key=lambda k: (self.arrivals[k].mtime, self.arrivals[k].relpath))

    def summary(self) -> str:
        counts = ", ".join(f"{s}={n}" for s, n in self.counts().items() if n)
        return (
            f"reconciled {self.start}..{self.end}: {self.folders} day folders, {self.listed} scan files "
            f"in {self.seconds:.1f} s; {counts or 'nothing found'}"
        )


def day_folders(lister: Lister, start: dt.date, end: dt.date) -> list[str]:
    """The ``YYYY/MM/YYMMDD`` folders dated within [start, end], listing only years and months in range."""
    found = []
    for year in _dirs(lister, "", r"^\d{4}$"):
        if not start.year <= int(year) <= end.year:
            continue
        for month in _dirs(lister, year, r"^\d{2}$"):
            if not (start.year, start.month) <= (int(year), int(month)) <= (end.year, end.month):
                continue
            for day in _dirs(lister, f"{year}/{month}", _DAY.pattern):
                try:
                    date = dt.datetime.strptime(day, "%y%m%d").date()
                except ValueError:
                    continue
                if start <= date <= end and day[2:4] == month:
                    found.append(f"{year}/{month}/{day}")
    return sorted(found)


def _dirs(lister: Lister, relpath: str, pattern: str) -> list[str]:
    return sorted(e.name for e in lister.list_dir(relpath) or [] if e.is_dir and re.match(pattern, e.name))


def reconcile(
    lister: Lister,
    known: Known,
    *,
    start: dt.date,
    end: dt.date,
    now: float,
    settle_seconds: float,
    accept: Callable[[str], str | None] | None = None,
) -> ReconcileReport:
    """List the range and classify every scan file (see the states above)."""
    started = time.monotonic()
    report = ReconcileReport(start=start, end=end)
    folders = day_folders(lister, start, end)
    report.folders = len(folders)
    partitions, registered = set(known.partitions), set(known.registered)
    reconstructed, quarantined = set(known.reconstructed), set(known.quarantined)
    for folder in folders:
        for entry in lister.list_dir(folder) or []:
            if entry.is_dir or not is_scan_name(entry.name):
                continue
            report.listed += 1
            relpath = f"{folder}/{entry.name}"
            key = scan_key(relpath)
            report.arrivals[key] = Arrival(relpath, entry.size, entry.mtime)
            reason = accept(relpath) if accept else None
            if key in reconstructed:
                state = DONE
            elif key in quarantined:
                state = QUARANTINED
            elif reason is not None:
                report.rejections.append(Rejection(relpath, reason))
                state = REJECTED
            elif now - entry.mtime < settle_seconds:
                state = SETTLING
            elif key in registered:
                state = INCOMPLETE
            elif key not in partitions:
                state = MISSING
            else:
                state = IN_FLIGHT if known.planned(key) else NEVER_RUN
            report.states[key] = state
    report.seconds = time.monotonic() - started
    return report


def contiguous_batches(keys: Collection[str], order: dict[str, int], size: int) -> list[list[str]]:
    """``keys`` grouped into runs of neighbours in partition order (a range run must not span
    other partitions), each at most ``size`` long; keys without a partition are left out."""
    ranked = sorted((order[k], k) for k in keys if k in order)
    batches: list[list[str]] = []
    last = None
    for rank, key in ranked:
        if batches and last is not None and rank == last + 1 and len(batches[-1]) < size:
            batches[-1].append(key)
        else:
            batches.append([key])
        last = rank
    return batches
