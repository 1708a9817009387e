"""Starting and stopping the real Dagster processes for one DAGSTER_HOME.

Used by ``cosmic-dagster demo``, ``cosmic-dagster deploy up`` and the end-to-end tests, so all
exercise exactly what an operator runs (``dagster-daemon run`` + ``dagster-webserver``, and in
the production shape a separate code server, ``cosmic-dagster-code-server``), never an in-process
shortcut.

The children run in their own sessions (a Ctrl-C in the terminal reaches only us, and we stop them
in order), so stopping them is our job on every stop signal: see :meth:`DagsterServices.start`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import requests

from cosmic_dagster import names
from cosmic_dagster.domain.processes import STOP_SIGNALS, StopFlag, stop_on_signals

# Shipped inside the package, so operator commands work from a wheel as from a checkout
# (the checkout's top-level dagster.yaml, workspace.yaml and deploy/*.yaml link here).
INSTANCE_YAML = Path(__file__).resolve().with_name("instance_yaml")


def free_port(preferred: int | None = None) -> int:
    """``preferred`` if nobody listens there, else any free loopback port."""
    for port in ([preferred] if preferred else []) + [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError("no free port on 127.0.0.1")


def prepare_home(dagster_home: Path, instance_yaml: Path = INSTANCE_YAML / "dagster.yaml") -> None:
    """Create DAGSTER_HOME with the project's instance configuration (kept across runs)."""
    if not instance_yaml.is_file():
        raise FileNotFoundError(f"instance configuration not found: {instance_yaml}")
    dagster_home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(instance_yaml, dagster_home / "dagster.yaml")
    # Create/migrate the SQLite storages once, here: the daemon and the webserver starting
    # together on a fresh home would both run the schema migrations and one would crash.
    from dagster import DagsterInstance

    with DagsterInstance.from_config(str(dagster_home)) as instance:
        instance.get_runs(limit=1)
        instance.get_dynamic_partitions(names.PARTITIONS)


@dataclass
class DagsterServices:
    """The daemon and the webserver as child processes with their logs in ``log_dir``.

    With ``code_server_port`` the code location runs in its own gRPC code server
    (``cosmic-dagster-code-server``, which also executes the runs) and the others load it through
    ``deploy/workspace.yaml``.
    """

    env: Mapping[str, str]
    log_dir: Path
    port: int
    code_server_port: int | None = None
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _stopping: StopFlag | None = field(default=None, init=False, repr=False)
    _saved_handlers: dict[int, object] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.code_server_port is not None:
            self.env = {
                **self.env,
                "COSMIC_CODE_SERVER_HOST": "127.0.0.1",
                "COSMIC_CODE_SERVER_PORT": str(self.code_server_port),
            }

    @property
    def workspace(self) -> Path:
        if self.code_server_port is None:
            return INSTANCE_YAML / "workspace.yaml"
        return INSTANCE_YAML / "deploy" / "workspace.yaml"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, name: str, argv: list[str]) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        self.procs[name] = subprocess.Popen(
            argv,
            cwd=self.workspace.parent,
            env=dict(self.env),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start_daemon(self) -> None:
        bindir = Path(sys.executable).parent
        self._spawn("daemon", [str(bindir / "dagster-daemon"), "run", "-w", str(self.workspace)])

    def start_code_server(self, timeout_s: float = 120.0) -> None:
        """Start the code server and wait until it answers gRPC health checks."""
        if self.code_server_port is None:
            raise RuntimeError("no code server in this deployment (code_server_port is None)")
        dagster = str(Path(sys.executable).parent / "dagster")
        port = str(self.code_server_port)
        serve = [sys.executable, "-m", "cosmic_dagster.instance.code_server", "-h", "127.0.0.1", "-p", port]
        location = ["-m", "cosmic_dagster.definitions", "--location-name", "cosmic_dagster"]
        self._spawn("code_server", [*serve, *location])
        health = [dagster, "api", "grpc-health-check", "-h", "127.0.0.1", "-p", port]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            if subprocess.run(health, env=dict(self.env), capture_output=True).returncode == 0:
                return
            time.sleep(0.5)
        raise TimeoutError(f"code server not healthy on port {port} after {timeout_s:.0f} s")

    def stop_code_server(self, sig: int = signal.SIGTERM, *, group: bool = True) -> None:
        self._stop("code_server", sig, group=group)

    def start_watcher(self) -> None:
        """The push trigger (``cosmic-dagster watch``): launches scans as they complete."""
        self._spawn("watcher", [sys.executable, "-m", "cosmic_dagster.cli", "watch", "--url", self.url])

    def stop_watcher(self) -> None:
        self._stop("watcher")

    def stop_daemon(self, sig: int = signal.SIGTERM, *, group: bool = True) -> None:
        """Stop the daemon; ``group=False`` signals only its main process (a crash, children live on)."""
        self._stop("daemon", sig, group=group)

    def start(self, timeout_s: float = 120.0) -> None:
        """Start both and wait until the webserver answers; on any failure stop what started.

        From the main thread, SIGTERM and SIGHUP (systemd, docker, a closed terminal) then interrupt
        the owner like Ctrl-C until :meth:`stop`: its ``finally``/``with`` stops these children
        instead of Python dying at once and leaving them running, holding their ports.
        """
        self._interrupt_on_stop_signals()
        try:
            self._start(timeout_s)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout_s: float) -> None:
        if self.code_server_port is not None:
            self.start_code_server(timeout_s)
        self.start_daemon()
        self.start_webserver()
        self._wait_webserver(timeout_s)

    def start_webserver(self) -> None:
        webserver = str(Path(sys.executable).parent / "dagster-webserver")
        self._spawn(
            "webserver", [webserver, "-w", str(self.workspace), "-h", "127.0.0.1", "-p", str(self.port)]
        )

    def restart_exited(self) -> list[str]:
        """Start again every process that exited, as a service manager would; returns their names.

        What the process left behind in its process group (a dead code server's run workers) is
        killed first, as a container restart would: run monitoring then fails and retries those
        runs, and their steps reattach to their Globus task and Slurm jobs.
        """
        starters = {
            "code_server": self.start_code_server,
            "daemon": self.start_daemon,
            "webserver": self.start_webserver,
            "watcher": self.start_watcher,
        }
        restarted = []
        for name, proc in list(self.procs.items()):
            if proc.poll() is None:
                continue
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            del self.procs[name]
            starters[name]()
            restarted.append(name)
        return restarted

    def _wait_webserver(self, timeout_s: float = 120.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                if requests.get(f"{self.url}/server_info", timeout=2).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.5)
        raise TimeoutError(f"webserver not answering on {self.url} after {timeout_s:.0f} s")

    def _check_alive(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"dagster {name} exited with {proc.returncode}:\n{tail}")

    def _stop(
        self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 20.0, group: bool = True
    ) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        if group:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def _interrupt_on_stop_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread() or self._stopping is not None:
            return
        self._saved_handlers = {signum: signal.getsignal(signum) for signum in STOP_SIGNALS}
        self._stopping = stop_on_signals(interrupt=True)

    def stop(self) -> None:
        """Stop every child (a stop signal arriving meanwhile no longer interrupts), restore the handlers."""
        if self._stopping is not None:
            self._stopping.set()
        for name in list(self.procs):
            self._stop(name)
        if self._stopping is not None and threading.current_thread() is threading.main_thread():
            for signum, handler in self._saved_handlers.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            self._stopping, self._saved_handlers = None, {}

    def __enter__(self) -> DagsterServices:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
