"""The push trigger: a new complete scan is registered and launched within a second.

The daemon evaluates sensors every 5 s at best, a fixed loop. ``cosmic-dagster watch`` instead
polls the recent day folders every ``poll_s`` with the sensor's own
:func:`~cosmic_dagster.domain.arrivals.discover` and registers and launches each new scan through the
webserver's GraphQL API, as the beamline computer called the Prefect API in the old system. The
arrival sensor stays as the safety net for whatever the watcher does not take.

**One launcher per scan.** A scan belongs to whoever adds its dynamic partition: the watcher adds
it (GraphQL answers *added* or *duplicate*) before launching, and the sensor only emits scans
without a partition. That alone leaves a window: the sensor checks in the code server but the
daemon adds and launches up to a second later, and a watcher add landing in between gives two
runs. So time separates them too: the watcher sends adds only while a scan is younger than
``settle + grace/3``, the sensor takes a scan only once it is older than ``settle + grace``
(``COSMIC_SENSOR_GRACE_S``, the same value for both). Any add the watcher sent is processed long
before the sensor may look (requests time out after ``grace/6``). A scan the watcher first sees
too late (it was down) is left to the sensor.

**Crash safety.** The cursor and each batch about to be claimed are saved together (atomic file
replace) before any add; claims and launches are saved before the next step. After a restart
nothing is found twice, and a saved batch is finished: a key whose claim outcome is unknown is
claimed again while still young (a *duplicate* answer then means our earlier add), else decided
once the sensor's turn is long past (a partition nobody ran is ours); a launch whose outcome is
unknown is looked up by its run tag before launching again.

**Completeness.** A writer that renames ``X.cxi.tmp`` to ``X.cxi`` has finished: a file seen as
``.tmp`` in one poll and under its final name in a later one counts as settled at once; other
files wait ``settle_seconds`` after their last modification, as in the sensor.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from cosmic_dagster import names
from cosmic_dagster.domain.arrivals import Cursor, Entry, Lister, discover
from cosmic_dagster.domain.processes import StopFlag
from cosmic_dagster.domain.scans import PARTIAL_SUFFIXES, ScanPathError, resolve_under_root, scan_key
from cosmic_dagster.files import write_atomic

log = logging.getLogger("cosmic_dagster.cli.watch")

#: How long after ``settle + grace`` the sensor has surely acted on a scan (tick + evaluation).
SENSOR_TURN_S = 60.0


class Orchestrator(Protocol):
    """What the watcher needs from Dagster (:class:`cosmic_dagster.cli.dagster_api.DagsterApi`)."""

    def claim_partition(self, partitions_def: str, key: str) -> bool: ...

    def newest_partition_keys(self, asset: str, limit: int) -> list[str]: ...

    def launch_scans(self, job: str, keys: Sequence[str], tags: dict[str, str] | None = None) -> str: ...

    def run_ids_with_tags(self, tags: dict[str, str], limit: int = 100) -> list[str]: ...

    def partition_statuses(self, asset: str) -> dict[str, list[str]]: ...


class RenameAwareLister:
    """Reports a scan as settled as soon as it was seen renamed into place from ``<name>.tmp``.

    Such a file is listed with ``mtime = settled_at`` (set by the caller to ``now - settle`` before
    each pass) unless it is older already.
    """

    def __init__(self, inner: Lister):
        self.inner = inner
        self.settled_at = 0.0
        self._partials: dict[str, set[str]] = {}  # folder -> partial names in its previous listing
        self._renamed: dict[str, set[str]] = {}  # folder -> final names seen appearing by rename

    def list_dir(self, relpath: str) -> list[Entry] | None:
        entries = self.inner.list_dir(relpath)
        if entries is None:
            self._partials.pop(relpath, None)
            self._renamed.pop(relpath, None)
            return None
        names = {e.name for e in entries}
        before = self._partials.get(relpath, set())
        renamed = {n for n in self._renamed.get(relpath, set()) if n in names}
        for name in names:
            partials = {name + suffix for suffix in PARTIAL_SUFFIXES}
            if partials & before and not partials & names:
                renamed.add(name)
        self._partials[relpath] = {n for n in names if n.endswith(PARTIAL_SUFFIXES)}
        self._renamed[relpath] = renamed
        return [replace(e, mtime=min(e.mtime, self.settled_at)) if e.name in renamed else e for e in entries]


@dataclass
class Batch:
    """Scans found together, claimed and launched together (as few runs as possible)."""

    id: str
    scans: dict[str, float]  # key -> completion time (mtime); order = claim order
    ours: list[str] = field(default_factory=list)  # keys whose partition we added
    launched: list[str] = field(default_factory=list)
    tried: dict[str, list[str]] = field(default_factory=dict)  # segment id -> keys, launch outcome unknown

    @property
    def done(self) -> bool:
        return not self.scans

    def drop(self, key: str) -> None:
        self.scans.pop(key, None)


@dataclass
class WatchState:
    cursor: Cursor
    batches: list[Batch]

    @classmethod
    def load(cls, path: Path) -> WatchState:
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return cls(Cursor(done={}), [])
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"watch state {path} is unreadable ({exc}); move it away to start afresh"
            ) from None
        return cls(Cursor.load(data.get("cursor")), [Batch(**b) for b in data.get("batches", [])])

    def save(self, path: Path) -> None:
        """Replace the file atomically (write, fsync, rename): a crash leaves the old or the new."""
        body: dict[str, Any] = {
            "cursor": self.cursor.dump(),
            "batches": [vars(b) for b in self.batches],
        }
        write_atomic(path, json.dumps(body, sort_keys=True))


class Watcher:
    def __init__(
        self,
        api: Orchestrator,
        lister: Lister,
        state_path: Path,
        *,
        settle_seconds: float,
        grace_seconds: float,
        recent_days: int = 2,
        max_per_run: int = 20,
        max_per_poll: int = 200,
        accept: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.api = api
        self.lister = RenameAwareLister(lister)
        self.state_path = state_path
        self.settle_seconds = settle_seconds
        self.claim_window = grace_seconds / 3
        self.sensor_done_after = grace_seconds + SENSOR_TURN_S
        self.recent_days = recent_days
        self.max_per_run = max_per_run
        self.max_per_poll = max_per_poll
        self.accept = accept
        self.clock = clock
        self.state = WatchState.load(state_path)
        self._never_tried: set[str] = set()  # keys of this process's batches, no add sent yet

    def poll(self) -> list[str]:
        """One pass: finish saved batches, find new scans, claim and launch them; new run ids."""
        run_ids = self._advance_all()
        now = self.clock()
        self.lister.settled_at = now - self.settle_seconds
        found = discover(
            self.lister,
            self.state.cursor,
            now=now,
            recent_days=self.recent_days,
            settle_seconds=self.settle_seconds,
            max_per_tick=self.max_per_poll,
            accept=self.accept,
        )
        if found.cursor.done == self.state.cursor.done:
            return run_ids
        for rejection in found.rejections:
            log.warning(
                "not registering %s: %s (the sensor quarantines it)", rejection.relpath, rejection.reason
            )
        young = []
        for arrival in found.arrivals:
            if now - arrival.mtime < self.settle_seconds + self.claim_window:
                young.append(arrival)
            else:
                log.info(
                    "leaving %s to the sensor: complete for too long before it was seen", arrival.relpath
                )
        for i in range(0, len(young), self.max_per_run):
            chunk = young[i : i + self.max_per_run]
            scans = {scan_key(a.relpath): a.mtime for a in chunk}
            self.state.batches.append(Batch(id=uuid.uuid4().hex[:12], scans=scans))
            self._never_tried.update(scans)
        self.state.cursor = found.cursor
        self.state.save(self.state_path)  # before any add: a restart finishes these batches
        return run_ids + self._advance_all()

    def run(self, stop: StopFlag, poll_s: float = 0.25) -> None:
        """Poll until ``stop`` is set; errors (webserver down...) are logged and retried."""
        delay = poll_s
        while not stop.is_set():
            try:
                self.poll()
                delay = poll_s
            except Exception as exc:  # keep watching: the state file holds what is unfinished
                log.warning("watch pass failed, retrying in %.1f s: %s", delay, exc)
                delay = min(5.0, delay * 2)
            stop.wait(delay)

    def _advance_all(self) -> list[str]:
        if not self.state.batches:
            return []
        run_ids: list[str] = []
        for batch in list(self.state.batches):
            run_ids += self._advance(batch)
            if batch.done:
                self.state.batches.remove(batch)
        self.state.save(self.state_path)
        return run_ids

    def _advance(self, batch: Batch) -> list[str]:
        changed = self._claim(batch)
        if changed:
            self.state.save(self.state_path)
        return self._launch(batch)

    def _claim(self, batch: Batch) -> bool:
        """Claim every key of ``batch`` whose owner is not known yet; True if anything was decided."""
        now = self.clock()
        statuses: dict[str, list[str]] | None = None
        changed = False
        for key, completed in list(batch.scans.items()):
            if key in batch.ours:
                continue
            age = now - completed - self.settle_seconds
            first = key in self._never_tried
            if age < self.claim_window:
                try:
                    added = self.api.claim_partition(names.PARTITIONS, key)
                except Exception as exc:  # outcome unknown: claim again next pass
                    self._never_tried.discard(key)
                    log.warning("claiming %s failed (will retry): %s", key, exc)
                    continue
                self._never_tried.discard(key)
                if added or not first:  # a duplicate after an unanswered add of ours is ours
                    batch.ours.append(key)
                else:
                    log.info("scan %s was registered by someone else: not launching it", key)
                    batch.drop(key)
            elif first:
                log.info("leaving %s to the sensor: could not claim it in time", key)
                batch.drop(key)
            elif age >= self.sensor_done_after:
                statuses = statuses or self.api.partition_statuses(names.RAW_SCAN)
                if key in statuses["missing"]:  # registered (by us) and never run by anyone
                    batch.ours.append(key)
                else:
                    batch.drop(key)
            else:
                continue  # unknown whether our add landed: decide after the sensor's turn
            changed = True
        return changed

    def _launch(self, batch: Batch) -> list[str]:
        run_ids = []
        for segment_id, keys in list(batch.tried.items()):
            if self.api.run_ids_with_tags({names.TAG_WATCH_SEGMENT: segment_id}, limit=1):
                self._launched(batch, segment_id, keys)
        pending = [k for k in batch.ours if k not in batch.launched]
        retry = list(batch.tried.values())
        fresh = self._segments([k for k in pending if not any(k in keys for keys in retry)])
        todo = retry + fresh
        if not todo:
            return []
        for keys in fresh:
            batch.tried[f"{batch.id}:{keys[0]}"] = keys
        self.state.save(self.state_path)  # a launch that times out is looked up by its tag first
        for keys in todo:
            segment_id = f"{batch.id}:{keys[0]}"
            tags = {
                names.TAG_WATCH_SEGMENT: segment_id,
                names.TAG_SCANS: str(len(keys)),
                names.TAG_SUBMITTED_BY: names.BY_WATCHER,
            }
            try:
                run_id = self.api.launch_scans(names.SCAN_JOB, keys, tags)
            except Exception as exc:
                log.warning("launching %s failed (will look it up and retry): %s", keys, exc)
                continue
            latency = self.clock() - max(batch.scans[k] for k in keys)
            self._launched(batch, segment_id, keys)
            log.info("launched run %s for %s (%.2f s after completion)", run_id, ", ".join(keys), latency)
            run_ids.append(run_id)
        return run_ids

    @staticmethod
    def _launched(batch: Batch, segment_id: str, keys: list[str]) -> None:
        batch.tried.pop(segment_id, None)
        batch.launched += keys
        for key in keys:
            batch.drop(key)

    def _segments(self, keys: list[str]) -> list[list[str]]:
        """Split ``keys`` into runs of keys added contiguously (a range run covers what lies between)."""
        if len(keys) <= 1:
            return [keys] if keys else []
        newest = self.api.newest_partition_keys(names.RAW_SCAN, max(200, 4 * len(keys)))
        return contiguous_segments(keys, newest)


def contiguous_segments(keys: Sequence[str], order: Sequence[str]) -> list[list[str]]:
    """``keys`` grouped into maximal runs that are consecutive in ``order`` (insertion order).

    A key missing from ``order`` gets a run of its own.
    """
    position = {k: i for i, k in enumerate(order)}
    segments: list[list[str]] = []
    for key in keys:
        last = segments[-1][-1] if segments else None
        if last in position and key in position and position[key] == position[last] + 1:
            segments[-1].append(key)
        else:
            segments.append([key])
    return segments


def path_rejection(beamline_root: str | Path) -> Callable[[str], str | None]:
    """The sensor's rule: refuse files (symlinks included) that resolve outside the beamline root."""

    def reject(relpath: str) -> str | None:
        try:
            resolve_under_root(beamline_root, relpath)
        except ScanPathError as exc:
            return str(exc)
        return None

    return reject
