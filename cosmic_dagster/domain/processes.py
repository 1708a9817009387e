"""Is a process still there? (pid + kernel start time, so a reused pid is not mistaken for it.)
And how a long-running command learns it must stop (every stop signal, not only Ctrl-C)."""

from __future__ import annotations

import os
import select
import signal
import time
import weakref


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


class StopFlag:
    """A "stop" flag that a signal handler may set: setting it takes no lock.

    ``threading.Event.set`` takes the event's lock, and a handler runs in the main thread between
    two bytecodes, possibly inside ``Event.wait`` while that thread holds the same lock: the
    handler then blocks forever (the likely cause of a watcher still running 30 s after SIGTERM in
    CI; ``tests/unit/test_stop_flag.py`` shows the deadlock with an Event). Here the flag
    is a plain attribute and waiters sleep in ``select`` on a pipe that ``set`` writes one byte to
    (``os.write`` is async-signal-safe); the byte is never read, so the pipe stays readable and
    every waiter, in any thread, wakes at once and for good.
    """

    def __init__(self) -> None:
        self._set = False
        self._read_fd, self._write_fd = os.pipe()
        os.set_blocking(self._write_fd, False)
        weakref.finalize(self, _close_all, self._read_fd, self._write_fd)

    def set(self) -> None:
        if not self._set:
            self._set = True
            os.write(self._write_fd, b"x")

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        """Sleep until set or ``timeout`` seconds passed; whether it is set.

        Sleeps in slices of at most :data:`_WAKE_S`: a signal the kernel delivers to another thread
        (any thread may take a process's signal) does not interrupt the main thread's ``select``,
        and Python runs the handler only when the main thread next executes bytecode.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._set:
            left = _WAKE_S if deadline is None else min(_WAKE_S, deadline - time.monotonic())
            if left <= 0:
                break
            select.select([self._read_fd], [], [], left)
        return self._set


#: Longest sleep of :meth:`StopFlag.wait` between two chances for a pending signal handler to run.
_WAKE_S = 0.5


def _close_all(*fds: int) -> None:
    for fd in fds:
        os.close(fd)


def stop_on_signals(*, interrupt: bool = False) -> StopFlag:
    """Make SIGINT, SIGTERM and SIGHUP all mean "stop" in this process; call from the main thread.

    Each sets the returned flag, for loops that wait on it. With ``interrupt`` the first one also
    raises KeyboardInterrupt in the main thread, as Ctrl-C does, so that code blocked anywhere
    unwinds through the ``finally`` blocks that stop its children; later ones only set the flag,
    so a second signal cannot break off that stopping. Without this, SIGTERM and SIGHUP end Python
    at once and every child process (in its own session) is left running.
    """
    stop = StopFlag()

    def handle(signum: int, frame: object) -> None:
        first = not stop.is_set()
        stop.set()
        if interrupt and first:
            raise KeyboardInterrupt(signal.Signals(signum).name)

    for signum in STOP_SIGNALS:
        signal.signal(signum, handle)
    return stop
