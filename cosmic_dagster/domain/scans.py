"""Scan identity: partition keys from relative paths, and the path checks done at the edge.

Dagster partition keys must avoid commas, pipes and friends (they break backfills and the UI), so a
key uses only ``[A-Za-z0-9_.-]``. The mapping is injective and reversible:

* a canonical COSMIC path ``YYYY/MM/YYMMDD/NS_YYMMDDNNN_ccdframes_E_R.cxi`` whose folders agree
  with the date in its name is keyed by its stem (``NS_230216033_ccdframes_0_0``): readable, and
  the path is fully determined by it;
* any other path gets ``p.`` + an escaped form of the whole path (``_`` -> ``__``, ``/`` -> ``_-``,
  other bytes -> ``_xHH``), which cannot start with ``NS_``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path, PurePosixPath

from cosmic_dagster.errors import CosmicError

KEY_CHARS = re.compile(r"^[A-Za-z0-9_.-]+$")
_CANONICAL = re.compile(
    r"^(?P<yyyy>\d{4})/(?P<mm>\d{2})/(?P<yymmdd>\d{6})/"
    r"(?P<stem>NS_(?P<date>\d{6})(?P<num>\d{3})_ccdframes_(?P<e>\d+)_(?P<r>\d+))\.cxi$"
)
_STEM = re.compile(r"^NS_(?P<date>\d{6})\d{3}_ccdframes_\d+_\d+$")
_PLAIN = re.compile(rb"[A-Za-z0-9.-]")
_ESCAPED_PREFIX = "p."

#: File name endings a writer uses while a file is incomplete (renamed when done).
PARTIAL_SUFFIXES = (".tmp", ".part", ".partial")
SCAN_SUFFIXES = (".cxi",)


class ScanPathError(CosmicError, ValueError):
    """A path that must not enter the pipeline (escapes the root, not a scan, unreadable...)."""


def _is_canonical(relpath: str) -> re.Match[str] | None:
    m = _CANONICAL.match(relpath)
    if m is None:
        return None
    century_ok = m["yyyy"][:2] == "20" and m["yyyy"][2:] == m["date"][:2]
    if not century_ok or m["yymmdd"] != m["date"] or m["mm"] != m["date"][2:4]:
        return None
    return m


def scan_key(relpath: str) -> str:
    """The partition key of a scan given its path relative to the beamline root."""
    relpath = normalize_relpath(relpath)
    canonical = _is_canonical(relpath)
    if canonical is not None:
        return canonical["stem"]
    out = []
    for byte in relpath.encode("utf-8"):
        char = bytes([byte])
        if char == b"_":
            out.append("__")
        elif char == b"/":
            out.append("_-")
        elif _PLAIN.match(char):
            out.append(char.decode())
        else:
            out.append(f"_x{byte:02x}")
    return _ESCAPED_PREFIX + "".join(out)


def relpath_for_key(key: str) -> str:
    """Inverse of :func:`scan_key` (raises ValueError for a string that is not a scan key)."""
    if _STEM.match(key):
        date = key[3:9]
        return f"20{date[:2]}/{date[2:4]}/{date}/{key}.cxi"
    if not key.startswith(_ESCAPED_PREFIX) or not KEY_CHARS.match(key):
        raise ValueError(f"not a scan key: {key!r}")
    body, raw, i = key[len(_ESCAPED_PREFIX) :], bytearray(), 0
    while i < len(body):
        char = body[i]
        if char != "_":
            raw += char.encode()
            i += 1
            continue
        nxt = body[i + 1 : i + 2]
        if nxt == "_":
            raw += b"_"
            i += 2
        elif nxt == "-":
            raw += b"/"
            i += 2
        elif nxt == "x" and re.fullmatch(r"[0-9a-f]{2}", body[i + 2 : i + 4]):
            raw.append(int(body[i + 2 : i + 4], 16))
            i += 4
        else:
            raise ValueError(f"not a scan key (bad escape at {i}): {key!r}")
    return raw.decode("utf-8")


def normalize_relpath(relpath: str) -> str:
    """A clean POSIX relative path, or ScanPathError (absolute, ``..``, empty, NUL)."""
    if not relpath or "\x00" in relpath:
        raise ScanPathError(f"invalid scan path {relpath!r}")
    path = PurePosixPath(relpath)
    if path.is_absolute() or any(part in ("..", ".", "") for part in relpath.split("/")):
        raise ScanPathError(f"scan path must be relative and normalized, got {relpath!r}")
    return str(path)


def resolve_under_root(root: str | Path, relpath: str) -> Path:
    """The real file for ``relpath``, refusing anything (symlinks included) outside ``root``."""
    relpath = normalize_relpath(relpath)
    root_real = Path(os.path.realpath(root))
    target = Path(os.path.realpath(root_real / relpath))
    if target != root_real and root_real not in target.parents:
        raise ScanPathError(f"{relpath!r} resolves outside the beamline root (symlink to {target})")
    return target


def relpath_under_root(root: str | Path, path: str | Path) -> str:
    """The relative path of ``path`` (absolute or relative to the cwd) under ``root``, validated."""
    root_abs = Path(os.path.abspath(root))
    path_abs = Path(os.path.abspath(path))
    try:
        rel = path_abs.relative_to(root_abs)
    except ValueError:
        raise ScanPathError(f"{path} is not under the beamline root {root_abs}") from None
    relpath = rel.as_posix()
    resolve_under_root(root_abs, relpath)
    return relpath


def is_scan_name(name: str) -> bool:
    """A finished scan file name (not a temp file of a writer still at work)."""
    return name.endswith(SCAN_SUFFIXES) and not name.startswith(".")
