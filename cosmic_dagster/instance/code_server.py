"""The code server: ``dagster api grpc``, whose watch over its run workers outlives a database outage.

Dagster's gRPC server looks every half second for run workers that died and fails their runs; the
daemon then retries them, and run monitoring asks this server (``CodeServerRunLauncher``) whether a
run still executes. That watch runs in one thread, which in Dagster 1.13 stops for good at the
first database error it meets. A worker that dies while PostgreSQL is away (killed, or crashed
because its last event could not be written) is then never failed, and the server goes on saying
it executes the run: the run stays STARTED and its scans wait forever. So did every run whose
worker died later, until the server was restarted.

Here a failed look is logged once per outage and made again on the next tick; the run is failed,
and retried, once the database answers.

Usage: ``cosmic-dagster-code-server`` (or ``python -m cosmic_dagster.instance.code_server``) with the
options of ``dagster api grpc``.

Dagster internals used (1.13.27): ``DagsterApiServer._check_for_orphaned_runs``, the method its
cleanup thread calls each tick (it clears a dead worker only after its run was failed).
"""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable

from dagster._grpc.server import DagsterApiServer

_log = logging.getLogger("cosmic_dagster.code_server")

_Check = Callable[[DagsterApiServer], None]


def outliving_errors(check: _Check) -> _Check:
    """``check``, logging an exception (once until a look succeeds again) instead of raising it."""
    failing = False

    @functools.wraps(check)
    def look(server: DagsterApiServer) -> None:
        nonlocal failing
        try:
            check(server)
        except Exception as exc:
            if not failing:
                why = (str(exc).strip().splitlines() or [""])[0]  # not the SQL and its parameters
                _log.warning(
                    "cannot look for dead run workers (%s: %s); looking again until it works",
                    type(exc).__name__,
                    why,
                )
            failing = True
        else:
            if failing:
                _log.warning("looking for dead run workers again")
            failing = False

    return look


def main() -> None:
    """``dagster api grpc`` with the outage-proof watch (arguments are passed through)."""
    from dagster._cli import main as dagster_main

    DagsterApiServer._check_for_orphaned_runs = outliving_errors(  # type: ignore[method-assign]
        DagsterApiServer._check_for_orphaned_runs
    )
    sys.argv = ["dagster", "api", "grpc", *sys.argv[1:]]
    dagster_main()


if __name__ == "__main__":
    main()
