"""File helpers that every layer shares. Standard library only: ``ptycho`` imports this module,
and a reconstruction job must start fast."""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_path(path: str | os.PathLike[str], unique: bool = False) -> Iterator[Path]:
    """A temporary sibling of ``path`` to write; renamed over ``path`` only if the block succeeds.

    Readers (the sensor, a job, the UI) never see a half-written file, and a failed write leaves
    nothing behind. The temporary name is ``<name>.tmp``, which the arrival sensor ignores and the
    watcher recognises as "being written"; with ``unique`` it also carries the process and thread,
    for files that several writers may replace at once.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tag = f".{os.getpid()}.{threading.get_ident()}" if unique else ""
    tmp = path.with_name(f"{path.name}{tag}.tmp")
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_atomic(path: str | os.PathLike[str], data: bytes | str, unique: bool = False) -> Path:
    """Write ``data`` to ``path`` through :func:`atomic_path`."""
    with atomic_path(path, unique) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    return Path(path)


def read_private_file(path: str | Path, what: str, error: type[Exception] = PermissionError) -> str:
    """Read a secret from a file that only its owner may read (like ssh does for its keys).

    ``what`` names the secret in the message (never its content); ``error`` is the caller's error
    class, so a settings problem reads as one.
    """
    path = Path(path)
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        raise error(f"{what} {path} does not exist") from None
    if not stat.S_ISREG(mode):
        raise error(f"{what} {path} is not a regular file")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise error(
            f"{what} {path} is readable by group or others (mode {stat.S_IMODE(mode):o}); "
            f"run: chmod 600 {path}"
        )
    return path.read_text()


def tail_lines(text: str, lines: int) -> str:
    """The last ``lines`` lines of ``text`` (a job's log, for an error message)."""
    return "\n".join(text.splitlines()[-lines:])
