"""Finding complete new scan files, independent of where they are listed from.

A :class:`Lister` answers "what is in this folder" (local disk, or a Globus collection for an
agent without access to the raw data); :func:`discover` walks only the recent ``YYYY/MM/YYMMDD``
day folders so a tick costs the same whatever the size of the archive.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cosmic_dagster.domain.scans import is_scan_name


@dataclass(frozen=True)
class Entry:
    """One directory entry as any lister reports it (mtime in epoch seconds)."""

    name: str
    is_dir: bool
    size: int
    mtime: float
    is_symlink: bool = False


class Lister(Protocol):
    """Lists one folder, given relative to the beamline root ("" is the root)."""

    def list_dir(self, relpath: str) -> list[Entry] | None:
        """Entries of ``relpath``, or None if the folder does not exist."""
        ...


@dataclass(frozen=True)
class Arrival:
    """A complete scan file ready to enter the pipeline."""

    relpath: str
    size: int
    mtime: float


@dataclass(frozen=True)
class Rejection:
    """A file that will not enter the pipeline, and why (reported once, never deleted)."""

    relpath: str
    reason: str


@dataclass
class Cursor:
    """What the sensor remembers between ticks, bounded by the recent day folders.

    ``done`` holds the files already emitted or rejected per day folder; folders that fall out of
    the recent window are dropped, so the cursor never grows with the archive.
    """

    done: dict[str, list[str]]

    @classmethod
    def load(cls, text: str | None) -> Cursor:
        if not text:
            return cls(done={})
        data = json.loads(text)
        return cls(done={day: list(names) for day, names in data.get("done", {}).items()})

    def dump(self) -> str:
        return json.dumps({"done": self.done}, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Discovery:
    arrivals: list[Arrival]
    rejections: list[Rejection]
    cursor: Cursor
    pending: int  # complete-looking files held back (still settling or over the per-tick cap)


_DAY = re.compile(r"^\d{6}$")
_YEAR = re.compile(r"^\d{4}$")
_MONTH = re.compile(r"^\d{2}$")


def recent_day_folders(lister: Lister, recent_days: int) -> list[str]:
    """The newest ``recent_days`` ``YYYY/MM/YYMMDD`` folders, found by walking down newest-first.

    Lists the root, then only as many year and month folders as needed: cost is independent of
    how many days, scans or years the archive holds.
    """
    found: list[str] = []
    for year in _sorted_dirs(lister, "", _YEAR):
        for month in _sorted_dirs(lister, year, _MONTH):
            for day in _sorted_dirs(lister, f"{year}/{month}", _DAY):
                found.append(f"{year}/{month}/{day}")
                if len(found) == recent_days:
                    return found
    return found


def _sorted_dirs(lister: Lister, relpath: str, pattern: re.Pattern[str]) -> list[str]:
    entries = lister.list_dir(relpath) or []
    return sorted((e.name for e in entries if e.is_dir and pattern.match(e.name)), reverse=True)


def discover(
    lister: Lister,
    cursor: Cursor,
    *,
    now: float,
    recent_days: int = 2,
    settle_seconds: float = 2.0,
    max_per_tick: int = 200,
    accept: Callable[[str], str | None] | None = None,
) -> Discovery:
    """New complete scans in the recent day folders, oldest first, at most ``max_per_tick``.

    A file is complete when its name is final (writers rename ``*.tmp`` when done) and it has
    not been modified for ``settle_seconds`` (for writers that do not rename). ``accept(relpath)``
    returns a reason to reject a file (e.g. a symlink leaving the root), or None.
    """
    days = recent_day_folders(lister, recent_days)
    done = {day: set(cursor.done.get(day, [])) for day in days}
    candidates: list[Arrival] = []
    rejections: list[Rejection] = []
    settling = 0
    for day in days:
        for entry in lister.list_dir(day) or []:
            if entry.is_dir or not is_scan_name(entry.name) or entry.name in done[day]:
                continue
            relpath = f"{day}/{entry.name}"
            if now - entry.mtime < settle_seconds:
                settling += 1
                continue
            reason = accept(relpath) if accept else None
            if reason is not None:
                rejections.append(Rejection(relpath, reason))
                done[day].add(entry.name)
                continue
            candidates.append(Arrival(relpath, entry.size, entry.mtime))
    candidates.sort(key=lambda a: (a.mtime, a.relpath))
    emitted = candidates[:max_per_tick]
    for arrival in emitted:
        day, name = arrival.relpath.rsplit("/", 1)
        done[day].add(name)
    new_cursor = Cursor(done={day: sorted(names) for day, names in done.items()})
    pending = settling + len(candidates) - len(emitted)
    return Discovery(arrivals=emitted, rejections=rejections, cursor=new_cursor, pending=pending)


class DirectoryLister:
    """Lists folders of a local (or mounted) beamline tree with ``os.scandir``."""

    def __init__(self, root: str | os.PathLike[str]):
        self.root = os.fspath(root)

    def list_dir(self, relpath: str) -> list[Entry] | None:
        path = os.path.join(self.root, relpath) if relpath else self.root
        try:
            with os.scandir(path) as it:
                return [self._entry(e) for e in it]
        except (FileNotFoundError, NotADirectoryError):
            return None

    @staticmethod
    def _entry(e: os.DirEntry[str]) -> Entry:
        try:
            st = e.stat(follow_symlinks=True)
            is_dir = e.is_dir(follow_symlinks=False)
        except FileNotFoundError:  # dangling symlink or removed meanwhile: report, decide later
            st = e.stat(follow_symlinks=False)
            is_dir = False
        return Entry(e.name, is_dir, st.st_size, st.st_mtime, is_symlink=e.is_symlink())
