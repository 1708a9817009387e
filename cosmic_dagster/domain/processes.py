"""Is a process still there? (pid + kernel start time, so a reused pid is not mistaken for it.)
And how a long-running command learns it must stop (every stop signal, not only Ctrl-C)."""

from __future__ import annotations

import os
import signal
import threading


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


#: What "stop" looks like to a long-running command: Ctrl-C, a service manager (systemd, docker),
#: a closed terminal.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def stop_on_signals(*, interrupt: bool = False) -> threading.Event:
    """Make SIGINT, SIGTERM and SIGHUP all mean "stop" in this process; call from the main thread.

    Each sets the returned event, for loops that wait on it. With ``interrupt`` the first one also
    raises KeyboardInterrupt in the main thread, as Ctrl-C does, so that code blocked anywhere
    unwinds through the ``finally`` blocks that stop its children; later ones only set the event,
    so a second signal cannot break off that stopping. Without this, SIGTERM and SIGHUP end Python
    at once and every child process (in its own session) is left running.
    """
    stop = threading.Event()

    def handle(signum: int, frame: object) -> None:
        first = not stop.is_set()
        stop.set()
        if interrupt and first:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    return stop
