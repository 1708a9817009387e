"""A Dagster run worker started ahead of time: dagster imported, code location loaded, run pending.

:class:`cosmic_dagster.instance.warm_launcher.WarmRunLauncher` starts it as
``python -m cosmic_dagster.instance.warm_worker <serialized RepositoryPythonOrigin>``. It imports dagster
and loads the code location (most of the ~2 s a fresh run worker spends before its first step),
then blocks on stdin. The launcher writes one line, the serialized ``ExecuteRunArgs`` of a run,
and closes stdin; the worker executes that run in-process with the very function behind
``dagster api execute_run`` (what Dagster's Docker/K8s launchers run) and exits. End of input
without a line means "not needed" (recycled, or the launching process died): it exits.

* **Fresh code.** Before executing, the worker compares the files of the user modules it imported
  (everything outside the Python installation) with the disk. If any changed, it replaces itself
  (``exec``, same pid) with a cold ``dagster api execute_run``: a run never executes code older
  than what is on disk, as with a freshly spawned worker.
* **Interrupts.** The whole life of the worker runs under Dagster's ``capture_interrupts``, so a
  SIGINT/SIGTERM from ``WarmRunLauncher.terminate`` arriving even before the run starts is kept and
  raised inside the step as ``DagsterExecutionInterruptedError``: the run ends CANCELED, as with
  Dagster's own run workers.

Private Dagster API is used here and only here (dagster 1.13.27): ``dagster._cli.api
.execute_run_command`` (the body of ``dagster api execute_run``), ``dagster._utils.interrupts
.capture_interrupts`` and ``ReconstructableRepository`` (to load the code location ahead of time;
the run's own load then hits the module and definitions caches). Nothing here imports the project's
code except through the code pointer, so this works for any code location.
"""

from __future__ import annotations

import os
import site
import sys
import sysconfig

Fingerprint = dict[str, tuple[int, int]]


def _installed_prefixes() -> tuple[str, ...]:
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        *site.getsitepackages(),
        sysconfig.get_path("stdlib"),
    }
    return tuple(os.path.realpath(p) + os.sep for p in paths if p)


def user_code_fingerprint() -> Fingerprint:
    """(mtime_ns, size) of every imported module file outside the Python installation."""
    installed = _installed_prefixes()
    files: Fingerprint = {}
    for module in list(sys.modules.values()):
        path = getattr(module, "__file__", None)
        if not path:
            continue
        real = os.path.realpath(path)
        if real.startswith(installed):
            continue
        try:
            st = os.stat(real)
        except OSError:
            continue
        files[real] = (st.st_mtime_ns, st.st_size)
    return files


def changed_files(before: Fingerprint) -> list[str]:
    """Files of ``before`` that were modified, replaced or removed since."""
    changed = []
    for path, stamp in before.items():
        try:
            st = os.stat(path)
        except OSError:
            changed.append(path)
            continue
        if (st.st_mtime_ns, st.st_size) != stamp:
            changed.append(path)
    return changed


def warm_up(serialized_origin: str) -> Fingerprint:
    """Import what a run needs and load the code location; returns the user-code fingerprint."""
    from dagster._cli.api import execute_run_command  # noqa: F401 - the import is the point
    from dagster._core.definitions.reconstruct import ReconstructableRepository
    from dagster._core.origin import RepositoryPythonOrigin
    from dagster._serdes import deserialize_value

    origin = deserialize_value(serialized_origin, RepositoryPythonOrigin)
    ReconstructableRepository(origin.code_pointer, executable_path=origin.executable_path).get_definition()
    return user_code_fingerprint()


def _exec_cold(execute_run_args: str) -> None:
    """Become a plain ``dagster api execute_run`` (same pid, so the launcher's tags stay valid)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "dagster", "api", "execute_run", execute_run_args])


def _report_failed_start(execute_run_args: str, reason: str) -> None:
    """Fail the run now rather than leave it STARTING until run monitoring's start timeout."""
    from dagster import DagsterInstance
    from dagster._grpc.types import ExecuteRunArgs
    from dagster._serdes import deserialize_value

    args = deserialize_value(execute_run_args, ExecuteRunArgs)
    if args.instance_ref is None:
        return
    with DagsterInstance.from_ref(args.instance_ref) as instance:
        run = instance.get_run_by_id(args.run_id)
        if run is not None and not run.is_finished:
            instance.report_run_failed(run, f"the run worker {os.getpid()} could not start the run: {reason}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print(
            "usage: python -m cosmic_dagster.instance.warm_worker <serialized RepositoryPythonOrigin>",
            file=sys.stderr,
        )
        return 2
    from dagster._utils.interrupts import capture_interrupts

    with capture_interrupts():
        fingerprint = warm_up(argv[0])
        line = sys.stdin.readline().strip()
        if not line:
            return 0
        stale = changed_files(fingerprint)
        if stale:
            print(
                f"warm run worker {os.getpid()}: code changed on disk ({stale[0]}...), restarting cold",
                file=sys.stderr,
            )
            try:
                _exec_cold(line)
            except OSError as exc:
                _report_failed_start(line, f"cannot start a fresh run worker: {exc}")
                raise
        from dagster._cli.api import execute_run_command

        execute_run_command.callback(input_json=line, compressed_input_json=None)  # type: ignore[misc]
    return 0


if __name__ == "__main__":
    sys.exit(main())
