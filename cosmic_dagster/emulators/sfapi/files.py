"""The SFAPI emulator's file utilities (ls, download, upload) on this machine's filesystem.

NERSC paths in tests are real local absolute paths. Only paths that resolve (symlinks followed)
inside one of the configured roots are served, so the emulator never exposes the rest of the
machine; errors read like the coreutils messages NERSC's API passes through.
"""

from __future__ import annotations

import base64
import grp
import os
import pwd
import stat
from datetime import datetime
from pathlib import Path

from cosmic_dagster.files import write_atomic


class FileAreaError(Exception):
    """A file operation failed; the message is what the API's ``error`` field carries."""


def _owner(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


def _entry(st: os.stat_result, name: str) -> dict:
    return {
        "perms": stat.filemode(st.st_mode),
        "hardlinks": st.st_nlink,
        "user": _owner(st.st_uid),
        "group": _group(st.st_gid),
        "size": st.st_size,
        "date": datetime.fromtimestamp(st.st_mtime).strftime("%Y-%m-%dT%H:%M:%S"),
        "name": name,
    }


class FileArea:
    """Local files under ``roots``, addressed by absolute paths."""

    def __init__(self, roots: list[str | Path]):
        self.roots = [Path(os.path.realpath(root)) for root in roots]

    def _resolve(self, path: str, verb: str) -> Path:
        if not path.startswith("/"):
            raise FileAreaError(f"{verb}: '{path}' is not an absolute path")
        real = Path(os.path.realpath(path))
        if not any(real == root or root in real.parents for root in self.roots):
            raise FileAreaError(
                f"{verb}: cannot access '{path}': Permission denied (outside the allowed roots)"
            )
        return real

    def ls(self, path: str) -> list[dict]:
        real = self._resolve(path, "ls")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            raise FileAreaError(f"ls: cannot access '{path}': No such file or directory") from None
        if stat.S_ISLNK(st.st_mode):
            return [_entry(st, f"{path} -> {os.readlink(path)}")]
        if not stat.S_ISDIR(st.st_mode):
            return [_entry(st, path)]
        entries = [_entry(os.stat(real), "."), _entry(os.stat(real.parent), "..")]
        for child in sorted(real.iterdir()):
            entries.append(_entry(child.lstat(), child.name))
        return entries

    def download(self, path: str, binary: bool) -> dict:
        real = self._resolve(path, "download")
        if real.is_dir():
            raise FileAreaError(f"download: '{path}' is a directory")
        try:
            data = real.read_bytes()
        except FileNotFoundError:
            raise FileAreaError(f"download: cannot access '{path}': No such file or directory") from None
        if binary:
            return {"file": base64.b64encode(data).decode("ascii"), "is_binary": True}
        try:
            return {"file": data.decode("utf-8"), "is_binary": False}
        except UnicodeDecodeError:
            raise FileAreaError(f"download: '{path}' is not a text file; ask for binary=true") from None

    def upload(self, path: str, data: bytes) -> str:
        real = self._resolve(path, "upload")
        if real.is_dir():
            raise FileAreaError(f"upload: '{path}' is a directory")
        if not real.parent.is_dir():
            raise FileAreaError(f"upload: cannot create '{path}': No such file or directory")
        write_atomic(real, data, unique=True)
        return f"wrote {len(data)} bytes to {path}"
