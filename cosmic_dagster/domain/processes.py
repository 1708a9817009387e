"""Is a process still there? (pid + kernel start time, so a reused pid is not mistaken for it)."""

from __future__ import annotations

import os


def process_start_time(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), or None if no such process.

    Together with the pid it identifies a process: a pid reused later has another start time.
    A zombie (exited, not reaped) counts as gone.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None
    except OSError:  # no /proc (not Linux): fall back to the pid alone
        return "" if _pid_exists(pid) else None
    return None if fields[0] == "Z" else fields[19]


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
