"""The stop flag a signal handler sets must never deadlock its own thread (the likely cause of a watcher
that ignored SIGTERM in CI), nor miss a signal another thread took."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

from cosmic_dagster.domain.processes import StopFlag

# A handler sets the flag 2,000 times a second while the main thread waits on it in a tight loop, so
# handlers keep landing inside ``wait``. With ``threading.Event`` in place of StopFlag this child
# fails within a second: a handler waits for the lock its own thread holds (with the timer still
# firing, nested handlers pile up until RecursionError; with one SIGTERM it simply hangs).
HAMMER = textwrap.dedent(
    """
    import signal, time
    from cosmic_dagster.domain.processes import StopFlag

    current = [StopFlag()]
    signal.signal(signal.SIGALRM, lambda signum, frame: current[0].set())
    signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
    sets, end = 0, time.monotonic() + 2.0
    while time.monotonic() < end:
        if current[0].wait(0.0001):
            current[0] = StopFlag()
            sets += 1
    signal.setitimer(signal.ITIMER_REAL, 0, 0)
    print(sets)
    """
)


def test_a_handler_setting_the_flag_inside_wait_does_not_deadlock() -> None:
    done = subprocess.run([sys.executable, "-c", HAMMER], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) > 100  # the handlers really ran, over and over


# The kernel may hand a process's signal to any of its threads (numpy's BLAS threads, a server's
# request threads); the handler must still run and the main thread's unbounded wait must end.
OTHER_THREAD = textwrap.dedent(
    """
    import signal, threading, time
    from cosmic_dagster.domain.processes import StopFlag

    flag = StopFlag()
    signal.signal(signal.SIGTERM, lambda signum, frame: flag.set())

    def deliver_here():
        time.sleep(0.2)
        signal.pthread_kill(threading.get_ident(), signal.SIGTERM)  # to this thread, not the main one

    threading.Thread(target=deliver_here, daemon=True).start()
    print(flag.wait())
    """
)


def test_a_signal_taken_by_another_thread_ends_an_unbounded_wait() -> None:
    done = subprocess.run([sys.executable, "-c", OTHER_THREAD], capture_output=True, text=True, timeout=60)
    assert (done.returncode, done.stdout.strip()) == (0, "True"), done.stderr


def test_wait_times_out_unset_and_returns_at_once_when_set() -> None:
    flag = StopFlag()
    assert flag.wait(0.01) is False
    assert not flag.is_set()
    flag.set()
    flag.set()  # idempotent
    assert flag.is_set()
    assert flag.wait() is True  # no timeout: would block forever if the wake-up were consumed
    assert flag.wait(0) is True


def test_set_wakes_every_waiting_thread() -> None:
    flag = StopFlag()
    woke: list[bool] = []
    waiters = [threading.Thread(target=lambda: woke.append(flag.wait(600))) for _ in range(3)]
    for waiter in waiters:
        waiter.start()
    flag.set()
    for waiter in waiters:
        waiter.join(60)
    assert woke == [True, True, True]
